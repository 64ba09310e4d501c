"""Small container images for the real-node harness, made without a registry or a daemon.

Each image is one layer written here from local files (a static Go pause, Debian's static busybox,
the cached CoreDNS binary) into a docker-archive tarball that `ctr images import` accepts. The
tarballs are cached under $KUBESERIAL_CACHE/nodes/images, keyed by their inputs.
"""

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from kubeserial_testing.controlplane import REPO_ROOT

CACHE_ROOT = Path(os.environ.get("KUBESERIAL_CACHE", Path.home() / ".cache" / "kubeserial"))
IMAGE_CACHE = CACHE_ROOT / "nodes" / "images"
COREDNS_VERSION = os.environ.get("COREDNS_VERSION", "v1.15.0")

PAUSE_IMAGE = "localhost/kubeserial/pause:local"
BUSYBOX_IMAGE = "localhost/kubeserial/busybox:local"
COREDNS_IMAGE = f"localhost/kubeserial/coredns:{COREDNS_VERSION}"
# Bump when the layout of the images written here changes (part of every cache key).
_FORMAT = "1"


@dataclass(frozen=True)
class Entry:
    """One member of the image's only layer: a directory, a file copied from `source`, or a symlink."""

    path: str
    kind: str  # "dir" | "file" | "symlink" | "data"
    mode: int = 0o755
    source: Path | None = None
    target: str = ""
    data: bytes = b""


def _key(*parts: object) -> str:
    digest = hashlib.sha256(_FORMAT.encode())
    for part in parts:
        if isinstance(part, Path):
            stat = part.stat()
            digest.update(f"{part}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


def _write_layer(entries: list[Entry], out: Path) -> None:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, 0, 0, 0
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                tar.addfile(info)
            elif entry.kind == "data":
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                assert entry.source is not None
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as src:
                    tar.addfile(info, src)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_docker_archive(
    entries: list[Entry],
    tag: str,
    out: Path,
    *,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
) -> Path:
    """A `docker save`-style tarball (manifest.json, config, one layer) with the given entries."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        layer = Path(tmp) / "layer.tar"
        _write_layer(entries, layer)
        layer_digest = _sha256_file(layer)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Env": list(env), "Entrypoint": entrypoint, "Cmd": cmd, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubeserial_testing.nodeimages"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
        manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_digest}/layer.tar"]}]
        partial = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.partial")
        with tarfile.open(partial, "w") as tar:
            for name, data in (("manifest.json", json.dumps(manifest).encode()), (config_name, config_bytes)):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            tar.add(layer, arcname=f"{layer_digest}/layer.tar")
        partial.replace(out)
    return out


def _cached(name: str, key: str) -> tuple[Path, bool]:
    path = IMAGE_CACHE / f"{name}-{key}.tar"
    return path, path.exists()


def pause_binary() -> Path:
    """The static pause program (hack/nodes/pause), built once per source version."""
    source = REPO_ROOT / "hack" / "nodes" / "pause"
    key = _key(source / "main.go", source / "go.mod")
    out = CACHE_ROOT / "nodes" / "bin" / f"pause-{key}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # builds may race
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), "."],
            cwd=source,
            check=True,
            env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
            capture_output=True,
        )
        tmp.replace(out)
    return out


def pause_image() -> Path:
    binary = pause_binary()
    path, done = _cached("pause", _key(binary))
    if not done:
        write_docker_archive(
            [Entry("pause", "file", source=binary)], PAUSE_IMAGE, path, entrypoint=["/pause"], cmd=None
        )
    return path


def busybox_image() -> Path:
    """Debian's static busybox with every applet linked, /tmp, and passwd/group for root and nobody."""
    busybox = Path("/bin/busybox")
    path, done = _cached("busybox", _key(busybox))
    if done:
        return path
    applets = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    entries = [Entry(d, "dir") for d in ("bin", "etc", "proc", "sys", "dev", "root", "var", "run")]
    entries += [Entry("tmp", "dir", mode=0o1777), Entry("bin/busybox", "file", source=busybox)]
    entries += [Entry(f"bin/{a}", "symlink", target="busybox") for a in sorted(applets) if a != "busybox"]
    entries += [
        Entry(
            "etc/passwd",
            "data",
            0o644,
            data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        ),
        Entry("etc/group", "data", 0o644, data=b"root:x:0:\nnogroup:x:65534:\n"),
    ]
    return write_docker_archive(entries, BUSYBOX_IMAGE, path, entrypoint=None, cmd=["sh"])


def coredns_binary() -> Path:
    """hack/build-coredns.sh: built from the Go module proxy once per version (waits for a running build)."""
    out = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-coredns.sh")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "COREDNS_VERSION": COREDNS_VERSION},
    )
    return Path(out.stdout.strip().splitlines()[-1])


def coredns_image() -> Path:
    binary = coredns_binary()
    path, done = _cached("coredns", _key(binary))
    if not done:
        entries = [Entry(d, "dir") for d in ("etc", "etc/coredns", "tmp")]
        entries.append(Entry("coredns", "file", source=binary))
        write_docker_archive(
            entries, COREDNS_IMAGE, path, entrypoint=["/coredns"], cmd=["-conf", "/etc/coredns/Corefile"]
        )
    return path
