"""Write a docker-archive (docker load's input) of one rootfs tarball for a given architecture.

    python3 oci_load.py ROOTFS.tar TAG ARCH [ENV=VALUE ...] | docker load

`docker import --platform` is ignored by Debian's dockerd 20.10 (not experimental): the image is
recorded as the host's architecture and `docker build/run --platform linux/arm64` then tries to pull
it. This archive states the architecture in the image config itself. One layer: the tarball as is.
"""

import hashlib
import io
import json
import os
import sys
import tarfile
import time


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    rootfs, tag, arch, *env = sys.argv[1:]
    diff_id = sha256_file(rootfs)
    # The tarball's time, not now: loading the same rootfs again gives the same image id, so images
    # built on it keep their docker layer cache (its tag may have been removed meanwhile).
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.stat(rootfs).st_mtime))
    config = {
        "architecture": arch,
        "os": "linux",
        **({"variant": "v8"} if arch == "arm64" else {}),
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *env],
            "Cmd": ["python3"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": created, "created_by": "mmdebstrap (hack/images/base.sh)"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}]
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as archive:
        for name, data in ((config_name, config_bytes), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        archive.add(rootfs, arcname=f"{diff_id}/layer.tar")
    return 0


if __name__ == "__main__":
    sys.exit(main())
