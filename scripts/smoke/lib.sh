# shellcheck shell=bash
# Common prelude of the smoke workloads; sourced by scripts/smoke/*.sh.
#
# A workload runs in a fresh, empty working directory (also $HOME), writes
# what is to be compared to stdout, and must be deterministic: the driver
# (scripts/preload-smoke.sh) runs it once under glibc and once under
# scripts/cma-run and compares stdout, stderr and exit status.
#
# Environment set by the driver:
#   SMOKE_MODE   glibc | preload
#   SMOKE_LIB    absolute path (symlinks resolved) of the preloaded library
#   SMOKE_DIR    this directory
set -Eeuo pipefail

smoke_rc=0
trap 'smoke_rc=$?; printf "smoke: %s: line %d: command failed with status %d: %s\n" "${0##*/}" "$LINENO" "$smoke_rc" "$BASH_COMMAND" >&2' ERR

# smoke_check_preload LABEL
# Fails the workload unless the library is mapped into this shell and into a
# child process (preload mode), or mapped into neither (glibc mode). Prints
# nothing on success, so that both runs print the same.
smoke_check_preload() {
    local label=$1 self child
    self=$(grep -cF -- "$SMOKE_LIB" "/proc/$$/maps" || true)
    child=$(grep -cF -- "$SMOKE_LIB" /proc/self/maps || true)
    case $SMOKE_MODE in
        preload)
            if [[ $self -eq 0 || $child -eq 0 ]]; then
                printf 'smoke: %s: %s is not mapped (shell: %s mappings, child: %s): LD_PRELOAD did not take effect\n' \
                    "$label" "$SMOKE_LIB" "$self" "$child" >&2
                exit 97
            fi
            ;;
        glibc)
            if [[ $self -ne 0 || $child -ne 0 ]]; then
                printf 'smoke: %s: %s is mapped in the glibc baseline run\n' "$label" "$SMOKE_LIB" >&2
                exit 97
            fi
            ;;
        *)
            printf 'smoke: %s: bad SMOKE_MODE=%s\n' "$label" "$SMOKE_MODE" >&2
            exit 97
            ;;
    esac
}

smoke_check_preload "${0##*/}"
