#!/usr/bin/env bash
# check-portable.sh BINARY GLIBC: fails unless BINARY needs no glibc symbol version newer than GLIBC
# and loads no shared library outside glibc (libc, libm, libpthread, libdl, librt, the loader).
set -euo pipefail
. "$(dirname "$0")/elf.sh"
bin=$1; want=$2
newest=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if [ -z "$newest" ]; then echo "check-portable: $bin has no glibc symbol versions (not a glibc binary?)" >&2; exit 1; fi
if [ "$(printf '%s\n%s\n' "$newest" "$want" | sort -V | tail -1)" != "$want" ]; then
    echo "check-portable: $bin needs glibc $newest, newer than $want:" >&2
    objdump -T "$bin" | grep "GLIBC_$newest" >&2
    exit 1
fi
allowed='^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2)$'
for lib in $(needed_libs "$bin"); do
    if ! [[ $lib =~ $allowed ]]; then echo "check-portable: $bin loads $lib, which is not part of glibc" >&2; exit 1; fi
done
if readelf -S "$bin" | grep -q '\.debug_info'; then echo "check-portable: $bin is not stripped" >&2; exit 1; fi
echo "check-portable: $bin needs glibc >= $newest (<= $want), loads only glibc libraries, stripped" >&2
