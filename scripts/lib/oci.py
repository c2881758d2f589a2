#!/usr/bin/env python3
"""Packs a root file system directory into an OCI image layout (image-spec v1.1), one layer.

No engine, no base image: the layer is a reproducible tar (sorted names, uid/gid 0, mtime 0, modes
as on disk), gzip-compressed with mtime 0, so the same rootfs always gives the same digests.

    oci.py --rootfs DIR --out LAYOUT --tag TAG [--label K=V ...] --entrypoint PATH [--cmd ARG ...]
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def layer_tar(rootfs):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries):
            rel = os.path.relpath(path, rootfs)
            st = os.lstat(path)
            info = tarfile.TarInfo(rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            info.mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                sys.exit(f"oci.py: {path}: only directories, files and symlinks go into the image")
    return buf.getvalue()


def put_blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--entrypoint", required=True)
    ap.add_argument("--cmd", action="append", default=[])
    a = ap.parse_args()

    os.makedirs(os.path.join(a.out, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    tar = layer_tar(a.rootfs)
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    layer = put_blob(a.out, gzip.compress(tar, compresslevel=9, mtime=0))
    layer["mediaType"] = MT_LAYER

    labels = dict(kv.split("=", 1) for kv in a.label)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": [a.entrypoint],
            "Cmd": a.cmd,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "WorkingDir": "/",
            "User": "0:0",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/release"}],
    }
    cfg = put_blob(a.out, canonical(config))
    cfg["mediaType"] = MT_CONFIG

    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": cfg,
        "layers": [layer],
        "annotations": labels,
    }
    man = put_blob(a.out, canonical(manifest))
    man["mediaType"] = MT_MANIFEST
    man["annotations"] = {"org.opencontainers.image.ref.name": a.tag}
    man["platform"] = {"architecture": "amd64", "os": "linux"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [man]}
    with open(os.path.join(a.out, "index.json"), "wb") as f:
        f.write(canonical(index))
    print(f"oci.py: {a.out}:{a.tag} manifest {man['digest']}", file=sys.stderr)


if __name__ == "__main__":
    main()
