#!/usr/bin/env bash
# The release image, tested as a user runs it: unpack the OCI layout that scripts/release built with
# umoci (as a container runtime would), then run `psk-guard check` from the unpacked root file system
# against a throw-away Antrea-like node whose run directory is bind-mounted where the Job's hostPath
# puts it (/var/run/antrea), in a private mount namespace. Needs root (mount, chroot); CI runs as root.
#
#   tests/image.sh DIST      (DIST: the --out directory of scripts/release)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
. scripts/lib/demo-node.sh
. scripts/lib/elf.sh
ensure_ovs
ensure_umoci
DIST=${1:?usage: tests/image.sh DIST}
VERSION=$(crate_version)

passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAILED: $*"; }

T=$(mktemp -d /tmp/psk-guard-image.XXXXXX)
cleanup() { stop_demo_node; rm -rf "$T"; }
trap cleanup EXIT

# 1. The artefacts keep the README's promises.
if scripts/lib/check-portable.sh "$DIST/psk-guard" 2.17; then ok "binary needs glibc <= 2.17 only, stripped"; else fail "portable binary"; fi
if (cd "$DIST" && sha256sum -c --quiet SHA256SUMS); then ok "SHA256SUMS"; else fail "SHA256SUMS"; fi
if readelf -S "$DIST/psk-guard.debug" 2>/dev/null | grep -q '\.debug_info' && readelf -p .gnu_debuglink "$DIST/psk-guard" | grep -q psk-guard.debug; then
    ok "debug info split off and linked"; else fail "debug info"; fi

# 2. umoci accepts the layout and unpacks the tagged image.
if umoci unpack --image "$DIST/oci:$VERSION" "$T/bundle" >"$T/umoci.log" 2>&1; then ok "umoci unpack oci:$VERSION"; else
    fail "umoci unpack: $(cat "$T/umoci.log")"; fi
ROOTFS=$T/bundle/rootfs
entry=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(" ".join(c["process"]["args"]))' "$T/bundle/config.json" 2>/dev/null || true)
if [ "$entry" = "/usr/local/bin/psk-guard check" ]; then ok "entrypoint + cmd: $entry"; else fail "entrypoint + cmd: '$entry'"; fi

# 3. The binary runs from the image's own file system (its loader and glibc, nothing of the host).
if out=$(chroot "$ROOTFS" /usr/local/bin/psk-guard --version 2>&1) && [ "$out" = "psk-guard $VERSION" ]; then
    ok "psk-guard --version in the image: $out"; else fail "--version in the image: $out"; fi

# 4. `psk-guard check` from the image against a demo node mounted as the Job mounts it. A container
# runtime always mounts /proc (runc's default spec), and psk-guard reaches opened files through
# /proc/self/fd, so the chroot gets one too; without it check says "/proc is not mounted".
start_demo_node "$T/node"
mkdir -p "$ROOTFS/var/run/antrea" "$ROOTFS/proc"
set +e
unshare --mount --propagation private sh -c \
    'mount --bind "$1" "$2/var/run/antrea" && mount -t proc proc "$2/proc" && exec chroot "$2" /usr/local/bin/psk-guard check -o json --fail-on high' \
    sh "$RUN" "$ROOTFS" >"$T/report.json" 2>"$T/stderr"
code=$?
set -e
if [ "$code" -eq 1 ]; then ok "check exit code 1 (findings at or above high)"; else fail "check exit code $code: $(head -c 2000 "$T/stderr")"; fi
if python3 - "$T/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
codes = {f["code"] for f in r["findings"]}
need = {"psk-plaintext-in-ovsdb", "psk-default-key", "psk-history-on-disk", "conf-db-mode-too-open"}
missing = need - codes
if missing:
    sys.exit(f"missing findings {sorted(missing)} in {sorted(codes)}")
EOF
then ok "report names the demo node's findings"; else fail "report findings"; fi
if grep -q -e changeme -e an-older-key-from-last-year "$T/report.json" "$T/stderr"; then fail "a key appears in the output"; else ok "no key in stdout or stderr"; fi

echo "image: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
