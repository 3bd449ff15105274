#!/usr/bin/env bash
# install-deps.sh: install what a fresh Debian 12 machine lacks for building
# and testing CMA. Idempotent: only missing pieces are installed, and
# 'apt-get update' runs at most once, and only when something is missing.
set -euo pipefail

prog=${0##*/}

usage() {
    cat <<EOF
Usage: $prog [--check] [--no-cargo] [--with COMMAND:PACKAGE]...

Installs (with apt-get, as root) whatever is missing of: C/C++ compilers,
make, pkg-config, python3, git, sqlite3, perl, valgrind, coreutils, the
tools the preload smoke test uses, and the peer allocators libjemalloc2,
libmimalloc2.0 and libtcmalloc-minimal4. Then checks that cargo exists
(it cannot be installed with apt here).

Options:
  --check      install nothing; list what is missing and exit 1 if anything is
  --no-cargo   do not require cargo (e.g. when testing a prebuilt library)
  --with COMMAND:PACKAGE
               also require COMMAND, from Debian package PACKAGE (the
               benchmark scripts: --with gnuplot:gnuplot-nox)
  -h, --help   show this help
EOF
}

check_only=0
need_cargo=1
extra_tools=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --check) check_only=1 ;;
        --no-cargo) need_cargo=0 ;;
        --with)
            [[ $# -ge 2 && $2 == *:* ]] || { printf '%s: error: --with needs COMMAND:PACKAGE\n' "$prog" >&2; exit 2; }
            extra_tools+=("$2")
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) printf '%s: error: unknown argument %s (try --help)\n' "$prog" "$1" >&2; exit 2 ;;
    esac
    shift
done

# command -> Debian package that provides it.
tools=(
    gcc:gcc
    g++:g++
    make:make
    pkg-config:pkg-config
    python3:python3
    git:git
    sqlite3:sqlite3
    perl:perl
    valgrind:valgrind
    timeout:coreutils
    sha256sum:coreutils
    mktemp:coreutils
    diff:diffutils
    cmp:diffutils
    grep:grep
    sed:sed
)
tools+=("${extra_tools[@]}")
# Packages checked with dpkg (libraries, no command to look for).
libs=(
    libjemalloc2
    libmimalloc2.0
    libtcmalloc-minimal4
    libc6-dev
)

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
add_missing() {
    local p
    for p in "${missing[@]}"; do
        [[ $p == "$1" ]] && return 0
    done
    missing+=("$1")
}

for entry in "${tools[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || add_missing "${entry#*:}"
done
# Perl modules used by the smoke test (Debian's 'perl' package ships them;
# 'perl-base' alone does not).
if command -v perl >/dev/null 2>&1 && ! perl -MDigest::MD5 -MList::Util -e 1 >/dev/null 2>&1; then
    add_missing perl
fi
# Python modules used by the smoke test ('python3-minimal' alone lacks them).
if command -v python3 >/dev/null 2>&1 &&
    ! python3 -c 'import json, hashlib, threading, queue, random' >/dev/null 2>&1; then
    add_missing python3
fi
for p in "${libs[@]}"; do
    pkg_installed "$p" || add_missing "$p"
done

if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $check_only -eq 1 ]]; then
        printf '%s: missing: %s\n' "$prog" "${missing[*]}" >&2
        exit 1
    fi
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            printf '%s: error: need root to install: %s\n' "$prog" "${missing[*]}" >&2
            exit 1
        fi
    fi
    log=$(mktemp "${TMPDIR:-/tmp}/cma-install-deps.XXXXXX.log")
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-o DPkg::Lock::Timeout=300)
    if ! "${sudo[@]}" apt-get "${apt_opts[@]}" update -q >"$log" 2>&1 ||
        ! "${sudo[@]}" apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
        printf '%s: error: apt-get failed installing: %s\n' "$prog" "${missing[*]}" >&2
        tail -n 30 "$log" >&2
        printf '(full log: %s)\n' "$log" >&2
        exit 1
    fi
    rm -f "$log"
    # Verify that the install really provided everything.
    still=()
    for entry in "${tools[@]}"; do
        command -v "${entry%%:*}" >/dev/null 2>&1 || still+=("${entry%%:*}")
    done
    for p in "${libs[@]}"; do
        pkg_installed "$p" || still+=("$p")
    done
    if [[ ${#still[@]} -gt 0 ]]; then
        printf '%s: error: still missing after install: %s\n' "$prog" "${still[*]}" >&2
        exit 1
    fi
    summary="installed ${missing[*]}"
else
    summary="all present"
fi

if [[ $need_cargo -eq 1 ]] && ! command -v cargo >/dev/null 2>&1; then
    if [[ -x $HOME/.cargo/bin/cargo ]]; then
        printf '%s: error: cargo is in %s but not on PATH; run: . "%s/.cargo/env"\n' "$prog" "$HOME/.cargo/bin" "$HOME" >&2
    else
        printf '%s: error: cargo not found. It cannot be installed with apt here; install the Rust toolchain (rustup) and put cargo on PATH.\n' "$prog" >&2
    fi
    exit 1
fi

printf '%s: dependencies OK (%s)\n' "$prog" "$summary"
