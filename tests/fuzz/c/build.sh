#!/usr/bin/env bash
# Builds every libFuzzer harness in tests/fuzz/c (one per .c file) as OUTDIR/<name>,
# with clang-14 -fsanitize=fuzzer,address,undefined. Prints nothing on success.
#
#   tests/fuzz/c/build.sh OUTDIR
#
# Each binary carries its own default -max_len (65535 for DNS: the largest UDP
# datagram; a flag on the command line overrides it); its seed corpus is
# tests/fuzz/corpus/<name>/. A harness whose source says "fuzz-build: embeds-python"
# embeds the interpreter of the checkout's .venv (kzgate installed in it, as
# scripts/test leaves it), links its libpython, and is built with every C file of
# kzgate._native (all of kzgate/**/*.c, as setup.py lists them), instrumented too.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
cc="${CC:-clang-14}"
command -v "$cc" >/dev/null || { echo "$0: no $cc (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 1; }
flags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
    -Wall -Wextra -Werror)
for src in "$here"/*.c; do
    name="$(basename "$src" .c)"
    extra=()
    if grep -q "fuzz-build: embeds-python" "$src"; then
        python="$root/.venv/bin/python"
        [ -x "$python" ] || { echo "$name: no $python (run scripts/test once)" >&2; exit 1; }
        mapfile -t py < <("$python" -c 'import sysconfig as s; v = s.get_config_var
print(s.get_paths()["include"]); print(v("LIBDIR")); print(v("LDVERSION"))')
        mapfile -t native < <(find "$root/kzgate" -name '*.c' | sort)
        # -fno-wrapv: Python's headers do not need it, and it would hide signed overflow.
        extra=("${native[@]}" -I"${py[0]}" -DKZGATE_ROOT="\"$root\"" -fno-wrapv
            -L"${py[1]}" -Wl,-rpath,"${py[1]}" -lpython"${py[2]}" -ldl -lm)
    fi
    "$cc" "${flags[@]}" "$src" -o "$out/$name" "${extra[@]}"
done
