#!/usr/bin/env bash
# Opening an image folder with and without its dataset index (issue 13): the time `distill` takes
# to list a folder and learn every image's size, cold page cache (when run as root) and warm.
# Usage: scripts/bench-folder-index.sh [DISTILL] [FOLDER]
#   DISTILL defaults to target/release/distill; FOLDER defaults to target/bench-jpegs, generated
#   on first use (2,000 JPEGs of 500x375, structured noise, quality 90, 10 classes; needs python3
#   with pip: pillow and numpy go into target/bench-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
distill=${1:-target/release/distill}
folder=${2:-target/bench-jpegs}
if [ ! -d "$folder/train" ]; then
    [ -x target/bench-venv/bin/python ] || python3 -m venv target/bench-venv
    target/bench-venv/bin/pip install --quiet --disable-pip-version-check pillow numpy
    target/bench-venv/bin/python - "$folder" <<'PY'
import os, sys
import numpy as np
from PIL import Image
root = os.path.join(sys.argv[1], "train")
rng = np.random.default_rng(0)
for c in range(10):
    d = os.path.join(root, f"c{c}")
    os.makedirs(d, exist_ok=True)
    for i in range(200):
        base = rng.normal(0, 1, (12, 16, 3))
        img = np.kron(base, np.ones((32, 32, 1)))[:375, :500]
        img = (img * 40 + 128 + rng.normal(0, 20, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(d, f"{i:04d}.jpg"), quality=90)
PY
fi
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
