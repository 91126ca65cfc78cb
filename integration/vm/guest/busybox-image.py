#!/usr/bin/python3
"""Writes a one-layer busybox image (Debian's busybox-static, every applet linked) as an OCI
image layout, tagged TAG, for skopeo to push to the guest's registry:

    busybox-image.py DIR TAG
"""

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

out, tag = sys.argv[1], sys.argv[2]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def entry(name, kind=tarfile.DIRTYPE, mode=0o755, data=b"", link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname, info.size = kind, mode, 0, link, len(data)
    return info, io.BytesIO(data) if data else None


raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev", "www"]:
        tar.addfile(*entry(d, mode=0o1777 if d == "tmp" else 0o755))
    with open("/bin/busybox", "rb") as f:
        tar.addfile(*entry("bin/busybox", tarfile.REGTYPE, 0o755, f.read()))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in sorted(set(applets) - {"busybox"}):
        tar.addfile(*entry(f"bin/{a}", tarfile.SYMTYPE, 0o777, link="busybox"))
    tar.addfile(*entry("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"))
    tar.addfile(*entry("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n"))
layer = raw.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
layer_digest, layer_size = blob(gzip.compress(layer, mtime=0))
config = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
}
config_digest, config_size = blob(json.dumps(config).encode())
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
}
manifest_digest, manifest_size = blob(json.dumps(manifest).encode())
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
