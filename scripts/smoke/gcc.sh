#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Workload: gcc. A generated C file with a few thousand functions, a big
# switch and many string literals, compiled with -O2 and -O0 (gcc, cc1, as,
# collect2 and ld all run preloaded); both programs are run. Their output and
# the checksums of the object files (gcc's output is reproducible) are
# compared.
# shellcheck source=lib.sh
. "$SMOKE_DIR/lib.sh"

NFUNC=2000
{
    printf '#include <stdio.h>\n#include <string.h>\n#include <stdint.h>\n\n'
    printf 'struct rec { const char *name; uint32_t v; };\n\n'
    for ((i = 0; i < NFUNC; i++)); do
        printf 'static const char *str_%d = "string literal number %d with some padding text %d";\n' "$i" "$i" $((i * 31 % 1000))
        printf 'static uint32_t f%d(uint32_t x) {\n' "$i"
        printf '    uint32_t h = x * %uu + %du;\n' $((2654435761 % (i * 2 + 3))) "$i"
        printf '    for (unsigned k = 0; k < %d; k++) h = (h ^ (h >> %d)) * 0x45d9f3bu + (uint32_t)strlen(str_%d);\n' $((i % 7 + 1)) $((i % 13 + 3)) "$i"
        printf '    return h %s %du;\n}\n' "$([[ $((i % 2)) -eq 0 ]] && echo '^' || echo '+')" $((i * 97))
    done
    printf '\nstatic uint32_t dispatch(unsigned i, uint32_t x) {\n    switch (i) {\n'
    for ((i = 0; i < NFUNC; i++)); do
        printf '    case %d: return f%d(x);\n' "$i" "$i"
    done
    printf '    default: return 0;\n    }\n}\n\n'
    printf 'static const char *names(unsigned i) {\n    switch (i %% 400) {\n'
    for ((i = 0; i < 400; i++)); do
        printf '    case %d: return "name-%d-%s";\n' "$i" "$i" "$(printf '%*s' $((i % 40)) '' | tr ' ' 'z')"
    done
    printf '    default: return "";\n    }\n}\n\n'
    cat <<'C'
int main(void) {
    uint32_t acc = 1;
    size_t total = 0;
    for (unsigned round = 0; round < 20; round++)
        for (unsigned i = 0; i < NFUNC; i++) {
            acc = dispatch(i, acc + round);
            total += strlen(names(i + round));
        }
    printf("acc=%u total=%zu\n", acc, total);
    for (unsigned i = 0; i < NFUNC; i += NFUNC / 10)
        printf("f%u(%u)=%u %s\n", i, i, dispatch(i, i), names(i));
    return 0;
}
C
} >big.c
sed -i "s/NFUNC/$NFUNC/g" big.c

echo "== sizes"
wc -l <big.c
sha256sum big.c
echo "== -O2"
gcc -O2 -Wall -Wno-unused-variable -c big.c -o big-O2.o
gcc big-O2.o -o big-O2
sha256sum big-O2.o
./big-O2
echo "== -O0"
gcc -O0 -Wall -Wno-unused-variable -c big.c -o big-O0.o
gcc big-O0.o -o big-O0
sha256sum big-O0.o
./big-O0
