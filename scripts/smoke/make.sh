#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Workload: make -j2. A generated C project of 30 modules and a Makefile,
# built in parallel; make, sh, gcc, cc1, as and ld all inherit the preload
# (a recipe checks that). Compared: the program's output, the checksums of
# all objects and a no-op rebuild.
# shellcheck source=lib.sh
. "$SMOKE_DIR/lib.sh"

NMOD=30
mkdir -p proj/src proj/include
cd proj || exit
{
    printf '#ifndef MODS_H\n#define MODS_H\n#include <stddef.h>\n'
    for ((m = 0; m < NMOD; m++)); do
        printf 'unsigned long mod%d_run(unsigned long seed);\nconst char *mod%d_name(void);\n' "$m" "$m"
    done
    printf '#endif\n'
} >include/mods.h
for ((m = 0; m < NMOD; m++)); do
    {
        printf '#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include "mods.h"\n\n'
        printf 'struct node%d { struct node%d *next; unsigned long v; char tag[%d]; };\n\n' "$m" "$m" $((m % 5 * 8 + 8))
        for ((k = 0; k < 40; k++)); do
            printf 'static unsigned long m%d_k%d(unsigned long x) { return (x * %du) ^ (x >> %d) ^ %du; }\n' \
                "$m" "$k" $((k * 2 + 2654435761 % (m + k + 7))) $((k % 17 + 1)) $((m * 1000 + k))
        done
        printf '\nconst char *mod%d_name(void) { return "module-%d"; }\n\n' "$m" "$m"
        printf 'unsigned long mod%d_run(unsigned long seed) {\n' "$m"
        printf '    struct node%d *head = NULL;\n    unsigned long acc = seed;\n' "$m"
        printf '    for (int i = 0; i < %d; i++) {\n' $((200 + m * 10))
        printf '        struct node%d *n = malloc(sizeof *n);\n        if (!n) abort();\n' "$m"
        printf '        n->v = acc;\n        snprintf(n->tag, sizeof n->tag, "%%d-%%lu", i, acc %% 1000);\n'
        printf '        n->next = head;\n        head = n;\n'
        for ((k = 0; k < 40; k += 3)); do
            printf '        acc = m%d_k%d(acc + i);\n' "$m" "$k"
        done
        printf '    }\n    while (head) {\n        struct node%d *n = head;\n' "$m"
        printf '        acc += n->v + strlen(n->tag);\n        head = n->next;\n        free(n);\n    }\n'
        printf '    (void)m%d_k1; (void)m%d_k2;\n' "$m" "$m"
        for ((k = 0; k < 40; k++)); do
            if ((k % 3 != 0)); then printf '    acc ^= m%d_k%d(acc);\n' "$m" "$k"; fi
        done
        printf '    return acc;\n}\n'
    } >"src/mod$m.c"
done
cat >src/main.c <<'C'
#include <stdio.h>
#include "mods.h"

typedef unsigned long (*run_fn)(unsigned long);
C
{
    printf 'static const struct { run_fn run; const char *(*name)(void); } mods[] = {\n'
    for ((m = 0; m < NMOD; m++)); do printf '    { mod%d_run, mod%d_name },\n' "$m" "$m"; done
    printf '};\n\nint main(void) {\n    unsigned long seed = 42;\n'
    printf '    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {\n'
    printf '        seed = mods[i].run(seed);\n        printf("%%s %%lu\\n", mods[i].name(), seed);\n    }\n'
    printf '    return 0;\n}\n'
} >>src/main.c

cat >Makefile <<'MK'
CC = gcc
CFLAGS = -O2 -Wall -Wextra -Wno-unused-function -Werror -Iinclude
SRCS = $(wildcard src/*.c)
OBJS = $(patsubst src/%.c,build/%.o,$(SRCS))

all: check-preload prog

# Runs in a shell forked by make: the preload must have reached it.
check-preload:
	@bash -c '. "$$SMOKE_DIR/lib.sh"; smoke_check_preload make-recipe'

prog: $(OBJS)
	$(CC) -o $@ $(OBJS)

build/%.o: src/%.c include/mods.h | build
	$(CC) $(CFLAGS) -c $< -o $@

build:
	mkdir -p build

.PHONY: all check-preload
MK

echo "== build"
make -s -j2
echo "== run"
./prog
echo "== objects"
sha256sum build/*.o | sort -k2
echo "== rebuild is a no-op"
make -q prog && echo up to date
