"""umockdev testbed driver: run by Debian's /usr/bin/python3 (it has GI), under umockdev's preload.

    umockdev-wrapper /usr/bin/python3 umockdev_driver.py

Standard library + gi only: the venv Python that runs the tests cannot import gi, so it drives
this script over pipes (kubeserial_testing.umockdev does that). Protocol, one line each way:

    <- ready <testbed dir>
    -> plug <key> <description file>     <- ok <devnode...> | error <message>
    -> unplug <key> [quiet]              <- ok | error <message>
    -> master <devnode> <unix socket>    <- ok | error <message>
    -> EOF: exit, removing the testbed

`plug` adds the devices of a umockdev description (each emits an `add` uevent); `unplug` removes
them children first, sending a `remove` uevent before each (removal itself sends none) unless
`quiet`: then the devices just vanish, like an event lost on the way. Before that, the pty master of
each tty is closed: the kernel hangs up a USB serial tty the moment its adapter goes, and a
program holding it open sees that at once (EIO, POLLHUP); without this it saw nothing. The pty
masters of the simulated ttys stay open in this process for as long as it runs; `master` hands
a duplicate of one to the test (SCM_RIGHTS over the given unix socket) so it can play the device.
"""

import os
import socket
import sys

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402


def sysfs_paths(description: str) -> list[str]:
    """The devices a description adds, parents first, as /sys paths."""
    return ["/sys" + line[3:].strip() for line in description.splitlines() if line.startswith("P: ")]


def devnodes(description: str) -> list[str]:
    return ["/dev/" + line[3:].strip() for line in description.splitlines() if line.startswith("N: ")]


def main() -> int:
    testbed = UMockdev.Testbed.new()
    plugged: dict[str, list[str]] = {}
    nodes: dict[str, list[str]] = {}
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
