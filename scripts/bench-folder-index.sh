#!/usr/bin/env bash
# Opening an image folder with and without its dataset index (issue 13): the time `distill` takes
# to list a folder and learn every image's size, cold page cache (when run as root) and warm.
# Usage: scripts/bench-folder-index.sh [DISTILL] [FOLDER]
#   DISTILL defaults to target/release/distill; FOLDER defaults to target/bench-jpegs, generated
#   on first use by scripts/make-bench-jpegs.sh (2,000 JPEGs of 500x375, 10 classes).
set -euo pipefail
cd "$(dirname "$0")/.."
distill=${1:-target/release/distill}
folder=${2:-target/bench-jpegs}
scripts/make-bench-jpegs.sh "$folder"
index="$folder/train/.distill-index"
# `train --epochs 0` opens the data (listing, sizes, fingerprint) and stops at the flag check.
open_once() {
    local t0 t1
    t0=$(date +%s.%N)
    "$distill" train --data "$folder" --model mlp --loss ce --epochs 0 --out target/bench-index-run \
        --test-split none >/dev/null 2>&1 || true
    t1=$(date +%s.%N)
    awk "BEGIN { print $t1 - $t0 }"
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; }
if drop; then caches="cold"; else caches="warm (not root: page cache kept)"; fi
printf "| run | %s, no index (s) | %s, index (s) | ratio |\n|---|---:|---:|---:|\n" "$caches" "$caches"
for i in 1 2 3; do
    rm -f "$index"; drop || true
    a=$(open_once)
    drop || true
    b=$(open_once)
    printf "| %d | %.3f | %.3f | %.1fx |\n" "$i" "$a" "$b" "$(awk "BEGIN { print $a / $b }")"
done
