# Shared set-up for scripts/dev and scripts/test: a fresh Debian machine with
# only Python gets what it needs here, and a prepared one is left as it is.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "kzgate: need root (or sudo) to run: $*" >&2; return 1; fi
}

APT_UPDATED=""
apt_install() {
    [ $# -gt 0 ] || return 0
    echo "kzgate: installing Debian packages: $*" >&2
    if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq >&2; APT_UPDATED=1; fi
    # Install servers (bind9, unbound, prometheus) without starting them: the
    # tests start their own on loopback ports. A policy-rc.d saying "no" does that.
    local policy=/usr/sbin/policy-rc.d added=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"; added=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
    [ -z "$added" ] || as_root rm -f "$policy"
}

# Each argument is COMMAND:PACKAGE; the package is installed only when the command is missing.
ensure_commands() {
    local missing=() item
    for item in "$@"; do
        command -v "${item%%:*}" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "${item%%:*}" >/dev/null 2>&1 || missing+=("${item#*:}")
    done
    apt_install "${missing[@]}"
}

# kzgate's C code (kzgate._native: the NameTable, the DNS fast path) is compiled
# at install: a C compiler and Python's headers. Without them the install still
# works, in pure Python.
ensure_build_tools() {
    command -v gcc >/dev/null 2>&1 || apt_install gcc libc6-dev
    if ! "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        local ver; ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        apt_install "python${ver}-dev" || apt_install python3-dev
    fi
}

# Creates .venv and installs the project; reinstalls only when the build inputs changed.
ensure_venv() {
    local extras="$1" stamp
    ensure_build_tools
    if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        # Debian splits venv/ensurepip out of the interpreter package.
        local ver; ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        apt_install "python${ver}-venv" || apt_install python3-venv
    fi
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    # Every C source and header counts: a changed one must be compiled again.
    stamp="$( { cat "$ROOT/pyproject.toml" "$ROOT/setup.py"
        find "$ROOT/kzgate" \( -name '*.c' -o -name '*.h' \) -print0 | sort -z | xargs -0 cat; } |
        sha256sum | cut -c1-16)-$extras"
    if [ "$(cat "$VENV/.kzgate-installed" 2>/dev/null)" != "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$extras]" >&2
        echo "$stamp" > "$VENV/.kzgate-installed"
    fi
}
