"""umockdev testbed driver: run by Debian's /usr/bin/python3 (it has GI), under umockdev's preload.

    umockdev-wrapper /usr/bin/python3 umockdev_driver.py

Standard library + gi only: the venv Python that runs the tests cannot import gi, so it drives
this script over pipes (kubeserial_testing.umockdev does that). Protocol, one line each way:

    <- ready <testbed dir>
    -> plug <key> <description file>     <- ok <devnode...> | error <message>
    -> unplug <key> [quiet]              <- ok | error <message>
    -> master <devnode> <unix socket>    <- ok | error <message>
    -> modem <devnode> <unix socket>     <- ok | error <message>
    -> inputs <devnode> <TIOCM bits>     <- ok | error <message>
    -> EOF: exit, removing the testbed

`plug` adds the devices of a umockdev description (each emits an `add` uevent); `unplug` removes
them children first, sending a `remove` uevent before each (removal itself sends none) unless
`quiet`: then the devices just vanish, like an event lost on the way. Before that, the pty master of
each tty is closed: the kernel hangs up a USB serial tty the moment its adapter goes, and a
program holding it open sees that at once (EIO, POLLHUP); without this it saw nothing. The pty
masters of the simulated ttys stay open in this process for as long as it runs; `master` hands
a duplicate of one to the test (SCM_RIGHTS over the given unix socket) so it can play the device.

`modem` gives the tty modem lines, which a pty lacks (TIOCMGET/TIOCMSET/TIOCMBIS/TIOCMBIC fail with
ENOTTY on a pty, and TIOCPKT on the master reports none of them): umockdev's preload hands every
ioctl() a process under it makes on the tty to a ModemLines handler here, which keeps DTR and RTS
as the program set them, answers TIOCMGET with them and with the input lines `inputs` set (CTS,
DSR, CD, RI), and writes one line per modem-line ioctl to the given unix socket:
`<request> <argument bits> dtr=<0|1> rts=<0|1>`. Every other ioctl runs on the pty as before
(client.execute). Only opens made after `modem` are seen; the handler runs on a GLib main loop in a
thread of its own, started by the first `modem`.
"""

import contextlib
import os
import socket
import struct
import sys
import termios
import threading

import gi

gi.require_version("UMockdev", "1.0")
gi.require_version("GLib", "2.0")
from gi.repository import GLib, UMockdev  # noqa: E402

MODEM_REQUESTS = {
    termios.TIOCMGET: "TIOCMGET",
    termios.TIOCMSET: "TIOCMSET",
    termios.TIOCMBIS: "TIOCMBIS",
    termios.TIOCMBIC: "TIOCMBIC",
}
OUTPUTS = termios.TIOCM_DTR | termios.TIOCM_RTS
INPUTS = termios.TIOCM_CTS | termios.TIOCM_DSR | termios.TIOCM_CAR | termios.TIOCM_RNG


class ModemLines(UMockdev.IoctlBase):  # type: ignore[misc]  # GI classes are untyped
    """The modem lines of one simulated adapter, recorded at the device."""

    def __init__(self, report: socket.socket) -> None:
        super().__init__()
        self.report = report
        self.outputs = 0  # DTR/RTS as last set through an ioctl (the kernel's own raise on open is not seen)
        self.inputs = 0
        self.lock = threading.Lock()

    def do_handle_ioctl(self, client: UMockdev.IoctlClient) -> bool:
        request = client.get_request()
        if request not in MODEM_REQUESTS:
            result, error = client.execute()
            client.complete(result, error)
            return True
        data = client.get_arg().resolve(0, 4)
        with self.lock:
            if request == termios.TIOCMGET:
                data.update(0, list(struct.pack("I", self.outputs | self.inputs)))
                bits = self.outputs | self.inputs
            else:
                bits = struct.unpack("I", bytes(data.retrieve()))[0]
                if request == termios.TIOCMSET:
                    self.outputs = bits & OUTPUTS
                elif request == termios.TIOCMBIS:
                    self.outputs |= bits & OUTPUTS
                else:
                    self.outputs &= ~bits & OUTPUTS
            dtr = int(bool(self.outputs & termios.TIOCM_DTR))
            rts = int(bool(self.outputs & termios.TIOCM_RTS))
        line = f"{MODEM_REQUESTS[request]} {bits:#x} dtr={dtr} rts={rts}\n"
        with contextlib.suppress(OSError):  # the test stopped listening; the program carries on
            self.report.sendall(line.encode())
        client.complete(0, 0)
        return True


_loop_thread: threading.Thread | None = None


def ensure_main_loop() -> None:
    """ioctl handlers run on the default main context: iterate it in a thread of its own."""
    global _loop_thread
    if _loop_thread is None:
        _loop_thread = threading.Thread(target=GLib.MainLoop().run, name="glib", daemon=True)
        _loop_thread.start()


def sysfs_paths(description: str) -> list[str]:
    """The devices a description adds, parents first, as /sys paths."""
    return ["/sys" + line[3:].strip() for line in description.splitlines() if line.startswith("P: ")]


def devnodes(description: str) -> list[str]:
    return ["/dev/" + line[3:].strip() for line in description.splitlines() if line.startswith("N: ")]


def main() -> int:
    testbed = UMockdev.Testbed.new()
    plugged: dict[str, list[str]] = {}
    nodes: dict[str, list[str]] = {}
    modems: dict[str, ModemLines] = {}  # devnode -> its handler (kept: open fds still talk to it)
    reply(f"ready {testbed.get_root_dir()}")
    for line in sys.stdin:
        words = line.split()
        try:
            if len(words) == 3 and words[0] == "plug":
                key, path = words[1], words[2]
                if key in plugged:
                    raise ValueError(f"{key} is already plugged in")
                with open(path, encoding="utf-8") as description_file:
                    description = description_file.read()
                testbed.add_from_string(description)
                plugged[key] = sysfs_paths(description)
                nodes[key] = devnodes(description)
                reply(" ".join(["ok", *devnodes(description)]))
            elif len(words) in (2, 3) and words[0] == "unplug":
                announce = words[2:] != ["quiet"]
                root = testbed.get_root_dir()
                for devnode in nodes.pop(words[1], []):
                    pty = os.readlink(root + devnode)  # /dev/pts/N behind the simulated tty
                    os.close(testbed.get_dev_fd(devnode))  # hang up, as an unplugged adapter does
                    # The kernel may now hand /dev/pts/N to the next plug; umockdev's map of it
                    # would then clash (it assumes its ptys live as long as the testbed).
                    ptymap = os.path.join(root, "dev", ".ptymap", pty.replace("/", "_"))
                    if os.path.lexists(ptymap):
                        os.unlink(ptymap)
                for sys_path in reversed(plugged.pop(words[1])):
                    if announce:
                        testbed.uevent(sys_path, "remove")
                    testbed.remove_device(sys_path)
                reply("ok")
            elif len(words) == 3 and words[0] == "modem":
                devnode = words[1]
                if testbed.get_dev_fd(devnode) < 0:
                    raise ValueError(f"{devnode} is not a simulated tty")
                ensure_main_loop()
                report = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                report.connect(words[2])
                modems[devnode] = ModemLines(report)
                if not testbed.attach_ioctl(devnode, modems[devnode]):
                    raise RuntimeError(f"umockdev would not attach an ioctl handler to {devnode}")
                reply("ok")
            elif len(words) == 3 and words[0] == "inputs":
                modem = modems[words[1]]
                with modem.lock:
                    modem.inputs = int(words[2], 0) & INPUTS
                reply("ok")
            elif len(words) == 3 and words[0] == "master":
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
                    channel.connect(words[2])
                    socket.send_fds(channel, [b"m"], [testbed.get_dev_fd(words[1])])
                reply("ok")
            else:
                reply(f"error unknown command {line.strip()!r}")
        except Exception as exc:  # report, keep serving: the test decides what a failure means
            reply(f"error {type(exc).__name__}: {exc}")
    return 0


def reply(text: str) -> None:
    sys.stdout.write(text.replace("\n", " ") + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
