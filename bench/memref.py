"""Memory references measured in the same run as the benchmark they sit beside.

`python_floor_mib()`: peak RSS (VmHWM) of `python -c pass` on the same interpreter, the floor
under every Python process we ship. `peak_mib(pid)`: VmHWM of a running process.
"""

import subprocess
import sys


def status_kib(pid: int | str, key: str) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_mib(pid: int | str) -> float:
    return round(status_kib(pid, "VmHWM") / 1024, 1)


def python_floor_mib(executable: str = sys.executable) -> float:
    """VmHWM of an interpreter that has done nothing (held on stdin while it is read)."""
    proc = subprocess.Popen(
        [executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:
        # The interpreter is up once it blocks on stdin: wait until its state is sleeping.
        for _ in range(200):
            with open(f"/proc/{proc.pid}/stat") as file:
                if file.read().rsplit(")", 1)[1].split()[0] == "S":
                    break
            subprocess.run(["sleep", "0.01"], check=False)
        return peak_mib(proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


if __name__ == "__main__":
    print(python_floor_mib())
