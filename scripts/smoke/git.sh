#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Workload: git. A repository with several hundred generated files, a few
# commits with fixed identities and dates (so every hash is reproducible),
# log/diff/blame/grep/archive, gc and fsck.
# shellcheck source=lib.sh
. "$SMOKE_DIR/lib.sh"

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="Smoke Author" GIT_AUTHOR_EMAIL="author@example.invalid"
export GIT_COMMITTER_NAME="Smoke Committer" GIT_COMMITTER_EMAIL="committer@example.invalid"
# Single-threaded packing: delta search with several threads may pick other
# deltas from run to run.
g() { git -c pack.threads=1 -c core.fsync=none -c gc.auto=0 -c init.defaultBranch=main "$@"; }
stamp() { export GIT_AUTHOR_DATE="$1 +0000" GIT_COMMITTER_DATE="$1 +0000"; }

g init -q repo
cd repo || exit

# 480 files in 12 directories, 1 to ~40 KiB each.
for d in $(seq -w 0 11); do
    mkdir -p "src/dir$d"
    for f in $(seq -w 0 39); do
        n=$((10#$d * 40 + 10#$f))
        {
            printf '/* file %s/%s, number %d */\n' "$d" "$f" "$n"
            for ((i = 0; i < (n % 23 + 1) * 12; i++)); do
                printf 'int value_%d_%d = %d; /* %s */\n' "$n" "$i" $((n * 7919 + i * 104729)) "line $i of file $n"
            done
        } >"src/dir$d/file$f.c"
    done
done
printf 'Generated test repository.\n' >README

stamp "1700000000"
g add -A
g commit -q -m "Initial import of generated files"

# A few more commits: modify, add, delete, rename.
for c in 1 2 3 4 5; do
    stamp "$((1700000000 + c * 3600))"
    for d in $(seq -w 0 11); do
        f=$(printf '%02d' $(((c * 7 + 10#$d * 3) % 40)))
        sed -i "s/line 3 of/line 3 (rev $c) of/; 9d" "src/dir$d/file$f.c"
        printf 'int added_in_commit_%d = %d;\n' "$c" "$c" >>"src/dir$d/file$f.c"
    done
    printf 'commit %d\n' "$c" >"src/new$c.txt"
    g rm -q "src/dir$(printf '%02d' "$c")/file39.c"
    g mv "src/dir00/file$(printf '%02d' "$c").c" "src/dir00/renamed$c.c"
    g add -A
    g commit -q -m "Change $c: edit 12 files, add one, delete one, rename one"
done
stamp "1700100000"
g checkout -q -b topic HEAD~2
printf 'topic change\n' >>README
g commit -q -am "Topic: edit README"
g checkout -q main
g merge -q --no-ff -m "Merge topic" topic

echo "== rev-parse"
g rev-parse HEAD "HEAD^{tree}" HEAD~3
echo "== log --stat"
g log --stat --format='%H %T %an <%ae> %ad %cn <%ce> %cd%n%s' --date=raw
echo "== log --graph"
g log --graph --oneline --all
echo "== diff HEAD~4 HEAD~1 (patch)"
g diff --find-renames HEAD~4 HEAD~1
echo "== diff --stat root..HEAD"
g diff --stat "$(g rev-list --max-parents=0 HEAD)" HEAD
echo "== blame"
g blame -s src/dir03/file10.c | sed -n 1,40p
echo "== grep"
g grep -c 'rev 3' HEAD -- src | sed -n 1,20p
echo "== ls-tree"
g ls-tree -r HEAD | sha256sum
echo "== archive"
g archive --format=tar HEAD | sha256sum
echo "== gc"
g gc -q --prune=now
g repack -q -a -d -f --window=50 --depth=20
echo "== objects"
g cat-file --batch-all-objects --batch-check | sort
echo "== fsck"
g fsck --full --strict --no-progress --no-dangling
echo "== log after gc"
g log --format='%H %s' | sha256sum
g status --porcelain
