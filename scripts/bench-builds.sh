#!/usr/bin/env bash
# The labelling and training-stream benchmarks of two builds side by side (issue 27: a
# restructuring must leave the figures as they were). Builds the `label_images` and `stream`
# bench binaries of REV (in a git worktree, sharing this checkout's target directory) and of the
# working tree, then runs them in alternating rounds on the same images and store: labelling at
# E = 8 (per-record and decode-once blocks; each build writes its own stores, which are then
# compared byte for byte) and the stream alone and a train epoch in each order.
# Usage: scripts/bench-builds.sh REV [ROUNDS]   (default 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/bench-builds.sh REV [ROUNDS]}
rounds=${2:-3}
scripts/build-deps.sh
scripts/fetch-ort.sh >/dev/null
scripts/make-bench-jpegs.sh target/bench-jpegs
root=$PWD
jpegs=$root/target/bench-jpegs
out=$root/target/bench-builds
mkdir -p "$out"
exe() { # the executable of bench $2 of package $1, built in directory $3
    (cd "$3" && CARGO_TARGET_DIR=$root/target cargo bench --quiet -p "$1" --bench "$2" --no-run \
        --message-format=json 2>/dev/null) | grep -o "\"executable\":\"[^\"]*/$2-[^\"]*\"" |
        cut -d'"' -f4 | tail -1
}
tree=$root/target/bench-builds/worktree
rm -rf "$tree"
git worktree prune
git worktree add --detach "$tree" "$rev" >/dev/null
for b in old new; do
    dir=$([ $b = old ] && echo "$tree" || echo "$root")
    cp "$(exe teacher-infer label_images "$dir")" "$out/label_images-$b"
    cp "$(exe student-train stream "$dir")" "$out/stream-$b"
done
git worktree remove --force "$tree"
store=$root/target/bench-label/store-folder-blocks-e8
[ -f "$store/manifest.json" ] || DISTILL_BENCH_JPEGS=$jpegs DISTILL_BENCH_OUT=$root/target/bench-label \
    DISTILL_BENCH_EPOCHS=8 DISTILL_BENCH_PATHS=blocks "$out/label_images-new" >/dev/null
cat "$jpegs"/train/*/* >/dev/null
rm -f "$out/runs.jsonl"
for r in $(seq "$rounds"); do
    for b in old new; do
        tag="{\"build\":\"$b\",\"round\":$r,"
        DISTILL_BENCH_JPEGS=$jpegs DISTILL_BENCH_OUT=$out/stores-$b DISTILL_BENCH_EPOCHS=8 \
            "$out/label_images-$b" 2>/dev/null | grep '^{' | sed "s/^{/$tag\"bench\":\"label\",/" >>"$out/runs.jsonl"
        DISTILL_BENCH_JPEGS=$jpegs DISTILL_BENCH_STORE=$store "$out/stream-$b" 2>/dev/null |
            grep '^{' | sed "s/^{/$tag\"bench\":\"stream\",/" >>"$out/runs.jsonl"
    done
done
for s in "$out"/stores-old/store-*; do
    n=$(basename "$s")
    if cmp -s <(cat "$s"/*.dls) <(cat "$out/stores-new/$n"/*.dls); then same=identical; else same=DIFFERENT; fi
    echo "$n: shards of the two builds $same"
done
python3 - "$out/runs.jsonl" "$rev" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print(f"| bench | what | order/path | {sys.argv[2]} records/s | this tree records/s | new / old |")
print("|---|---|---|---|---|---|")
def key(r):
    return (r["bench"], r.get("what", "label"), r.get("stream") or r["path"])
for k in dict.fromkeys(key(r) for r in runs):
    old = [r["records_per_sec"] for r in runs if key(r) == k and r["build"] == "old"]
    new = [r["records_per_sec"] for r in runs if key(r) == k and r["build"] == "new"]
    ratios = [n / o for o, n in zip(old, new)]
    print(f"| {k[0]} | {k[1]} | {k[2]} | {' / '.join(f'{v:.0f}' for v in old)} | "
          f"{' / '.join(f'{v:.0f}' for v in new)} | {min(ratios):.2f}–{max(ratios):.2f}x |")
PY
