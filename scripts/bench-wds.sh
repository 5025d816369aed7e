#!/usr/bin/env bash
# WebDataset shards against the same images as a folder (issue 16), one command. N samples
# (default 10,000: copies of the 2,000 generated 500x375 JPEGs of scripts/make-bench-jpegs.sh,
# 10 classes of N/10 files, each copy its own file so a cold cache is cold for every one) are
# packed into shards of at most 256 MB (4 of them: both cores scan) with `distill data pack-wds`; then
#   - opening the data (listing + every image's size) with and without the dataset index,
#     cold page cache and warm: the index build time per 10,000 samples;
#   - labelling (224 px, the cheap teacher of the label_images bench, 2 loader threads,
#     decode-once blocks; recipe usi, whose blocks walk a permutation of the samples, and light,
#     whose blocks walk them in order) from the folder and from the shards, cold and warm.
# Cold runs drop the page cache (needs root). Prints markdown tables.
#   - the training stream from shards and from a folder (warm).
# Usage: scripts/bench-wds.sh [N] [EPOCHS]   (defaults 10000, 1)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
n=${1:-10000}
epochs=${2:-1}
scripts/fetch-ort.sh >/dev/null
scripts/make-bench-jpegs.sh target/bench-jpegs
cargo build --quiet --release --locked --bin distill
distill=$PWD/target/release/distill
root=$PWD/target/bench-wds
folder=$root/folder-$n
shards=$root/shards-$n
mkdir -p "$root"
if [ ! -d "$folder/train" ]; then
    for ((c = 0; c < 10; c++)); do
        mkdir -p "$folder/train/c$c"
        src=(target/bench-jpegs/train/c$c/*.jpg)
        for ((i = 0; i < n / 10; i++)); do
            cp "${src[i % ${#src[@]}]}" "$folder/train/c$c/$(printf %06d "$i").jpg"
        done
    done
fi
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
secs() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }
if [ ! -f "$shards/train-000000.tar" ]; then
    t0=$(date +%s.%N)
    "$distill" data pack-wds "$folder" "$shards" --shard-size 256M --json >"$root/pack.json"
    t1=$(date +%s.%N)
    echo "packed $n samples into $(ls "$shards"/*.tar | wc -l) shards ($(du -sh "$shards" | cut -f1)) in $(secs "$t0" "$t1") s"
fi

# `train --epochs 0` opens the data (listing, sizes, fingerprint) and stops at the flag check.
open_once() {
    local t0 t1
    t0=$(date +%s.%N)
    "$distill" train --data "$1" --model mlp --loss ce --epochs 0 --out "$root/open-run" \
        --test-split none >/dev/null 2>&1 || true
    t1=$(date +%s.%N)
    secs "$t0" "$t1"
}
echo
echo "| data ($n samples) | cold, no index (s) | cold, index (s) | warm, no index (s) | warm, index (s) | no index per 10,000 cold (s) |"
echo "|---|---:|---:|---:|---:|---:|"
for what in folder shards; do
    if [ $what = folder ]; then d=$folder; idx=$folder/train/.distill-index; else d=$shards; idx=$shards/.distill-wds.idx; fi
    rm -f "$idx"; drop; a=$(open_once "$d")
    drop; b=$(open_once "$d")
    rm -f "$idx"; c=$(open_once "$d")
    e=$(open_once "$d")
    echo "| $what | $a | $b | $c | $e | $(awk "BEGIN { printf \"%.2f\", $a * 10000 / $n }") |"
done

echo
: >"$root/label.jsonl"
for recipe in usi light; do
    DISTILL_BENCH_OUT="$root/label" DISTILL_BENCH_EPOCHS="$epochs" DISTILL_BENCH_PATHS=blocks \
        DISTILL_BENCH_DATA="folder=$folder,wds=$shards" DISTILL_BENCH_CACHE=cold,warm \
        DISTILL_BENCH_RECIPE=$recipe \
        cargo bench --quiet -p teacher-infer --bench label_images | grep '^{' >>"$root/label.jsonl"
done
python3 - "$root/label.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print("| recipe | E | data | cache | records | s | records/s | vs folder, same cache |")
print("|---|---:|---|---|---:|---:|---:|---:|")
for r in runs:
    base = next(b for b in runs if b["data"] == "folder" and b["cache"] == r["cache"]
                and b["epochs"] == r["epochs"] and b["recipe"] == r["recipe"])
    print(f"| {r['recipe']} | {r['epochs']} | {r['data']} ({r['format']}) | {r['cache']} | "
          f"{r['records']} | "
          f"{r['seconds']:.1f} | {r['records_per_sec']:.0f} | "
          f"{r['records_per_sec'] / base['records_per_sec']:.2f}x |")
PY

# The training stream from shards and from the folder (both warm): the 2,000 generated JPEGs as a
# folder and packed into 64 MB shards, each labelled (usi, E = 8, decode-once blocks), then the
# stream benchmark of issue 13 over each store (2 loader threads, batch 128: the stream alone
# and one epoch of a small MLP, for each record order).
small=$PWD/target/bench-jpegs
small_shards=$root/shards-2000
[ -f "$small_shards/train-000000.tar" ] ||
    "$distill" data pack-wds "$small" "$small_shards" --shard-size 64M --json >/dev/null
DISTILL_BENCH_OUT="$root/label" DISTILL_BENCH_EPOCHS=8 DISTILL_BENCH_PATHS=blocks \
    DISTILL_BENCH_DATA="folder2000=$small,wds2000=$small_shards" \
    cargo bench --quiet -p teacher-infer --bench label_images >/dev/null
: >"$root/stream.jsonl"
for what in folder2000=$small wds2000=$small_shards; do
    name=${what%%=*} data=${what#*=}
    cat "$data"/* "$data"/train/*/* >/dev/null 2>&1 || true
    DISTILL_BENCH_JPEGS="$data" DISTILL_BENCH_STORE="$root/label/store-$name-blocks-e8" \
        cargo bench --quiet --workspace --bench stream | grep '^{' |
        sed "s/^{/{\"data\": \"$name\", /" >>"$root/stream.jsonl"
done
echo
python3 - "$root/stream.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print("| what | order | folder records/s | shards records/s | shards / folder |")
print("|---|---|---:|---:|---:|")
for r in (r for r in runs if r["data"] == "folder2000"):
    w = next(x for x in runs if x["data"] == "wds2000" and x["what"] == r["what"]
             and x["stream"] == r["stream"])
    print(f"| {r['what']} | {r['stream']} | {r['records_per_sec']:.0f} | "
          f"{w['records_per_sec']:.0f} | {w['records_per_sec'] / r['records_per_sec']:.2f}x |")
PY
