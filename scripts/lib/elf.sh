# Sourced by scripts/release, tests/image.sh and scripts/lib/check-portable.sh: facts about the
# crate and an ELF binary, read one way.
# shellcheck shell=bash

# The crate's version, from Cargo.toml's [package] table.
crate_version() { sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1; }

# The shared libraries BIN names in DT_NEEDED, one per line.
needed_libs() { readelf -d "$1" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'; }
