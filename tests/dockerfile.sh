#!/usr/bin/env bash
# The Dockerfile, built without Docker: buildah (Debian package) as root, chroot isolation, vfs
# storage under a temporary directory. Its build stage (FROM rust:1-bookworm) cannot be pulled
# here (no registry but crates.io, PyPI, Debian and npm), so the final stage is built from an
# image that holds scripts/release's rootfs at /dist/rootfs (--build-arg ROOTFS_FROM), which is
# what the build stage makes by running the same scripts/release --rootfs-only. The image it
# gives must have the same file system (names, types, modes, owners, contents, link targets) and
# the same entrypoint and command as the OCI image scripts/release assembled, which
# tests/image.sh runs. Not covered: the build stage's own commands (apt-get, pip, cargo in
# rust:1-bookworm).
#
#   tests/dockerfile.sh DIST      (DIST: the --out directory of scripts/release)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
. scripts/lib/elf.sh
ensure_buildah
ensure_umoci
DIST=$(cd "${1:?usage: tests/dockerfile.sh DIST}" && pwd)
VERSION=$(crate_version)

passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAILED: $*"; }

T=$(mktemp -d /tmp/psk-guard-dockerfile.XXXXXX)
B=(buildah --root "$T/storage" --runroot "$T/run" --storage-driver vfs)
cleanup() { "${B[@]}" rm --all >/dev/null 2>&1 || true; rm -rf "$T"; }
trap cleanup EXIT

# 1. An image holding the release rootfs where the build stage leaves it.
ctr=$("${B[@]}" from scratch)
"${B[@]}" copy "$ctr" "$DIST/rootfs" /dist/rootfs >/dev/null
"${B[@]}" commit -q "$ctr" localhost/psk-guard-rootfs:test >/dev/null
"${B[@]}" rm "$ctr" >/dev/null

# 2. The Dockerfile, as `docker build` would run it, with the rootfs image in place of the build stage.
if "${B[@]}" bud --isolation chroot --build-arg ROOTFS_FROM=localhost/psk-guard-rootfs:test \
    -t localhost/psk-guard:dockerfile -f Dockerfile . >"$T/bud.log" 2>&1; then
    ok "buildah bud Dockerfile (final stage)"; else fail "buildah bud: $(tail -20 "$T/bud.log")"; fi
"${B[@]}" push -q localhost/psk-guard:dockerfile "oci:$T/docker-oci:$VERSION" >/dev/null 2>&1

# 3. Both images unpacked as a runtime would, then compared.
umoci unpack --image "$T/docker-oci:$VERSION" "$T/docker" >/dev/null 2>&1 || fail "umoci unpack of the Dockerfile's image"
umoci unpack --image "$DIST/oci:$VERSION" "$T/release" >/dev/null 2>&1 || fail "umoci unpack of scripts/release's image"
listing() {
    (cd "$1" && find . -mindepth 1 -printf '%p %y %m %U:%G %l\n' | sort
     find . -type f -print0 | sort -z | xargs -0 sha256sum)
}
if diff <(listing "$T/release/rootfs") <(listing "$T/docker/rootfs") >"$T/diff"; then
    ok "same file system as scripts/release's image ($(find "$T/docker/rootfs" | wc -l) entries)"
else
    fail "file systems differ: $(head -20 "$T/diff")"
fi
args() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["args"])' "$1/config.json"; }
if [ "$(args "$T/docker")" = "$(args "$T/release")" ]; then ok "entrypoint + cmd: $(args "$T/docker")"; else
    fail "entrypoint + cmd: $(args "$T/docker") vs $(args "$T/release")"; fi

echo "dockerfile: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
