#!/usr/bin/env bash
# The training stream over an image-folder store (issue 13), one command: the store that
# scripts/bench-label-images.sh labels (2,000 JPEGs of 500x375, usi, 224 px, 8 epochs, decode-once
# blocks; made first if missing), 2 loader threads, batch 128. The stream alone (no model) and one
# `train` epoch of a small MLP (2 × 16 hidden units, kd) for: all records shuffled (today's order: each record decodes its
# image and its partner's), block windows (the default), block windows with --multi-crop 2.
# Usage: scripts/bench-train-stream.sh [FOLDER]   (default target/bench-jpegs)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
folder=${1:-target/bench-jpegs}
store=$PWD/target/bench-label/store-folder-blocks-e8
[ -f "$store/manifest.json" ] || scripts/bench-label-images.sh "$folder" 8 >/dev/null
scripts/fetch-ort.sh >/dev/null
folder=$(cd "$folder" && pwd)
cat "$folder"/train/*/* >/dev/null
DISTILL_BENCH_JPEGS="$folder" DISTILL_BENCH_STORE="$store" \
    cargo bench --quiet --workspace --bench stream | grep '^{' >target/bench-label/stream.jsonl
target/bench-venv/bin/python - target/bench-label/stream.jsonl <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print("| what | order | records | records/s | decodes/record | vs today |")
print("|---|---|---:|---:|---:|---:|")
for what in ("stream", "train epoch"):
    rows = [r for r in runs if r["what"] == what]
    base = rows[0]["records_per_sec"]
    for r in rows:
        print(f"| {what} | {r['stream']} | {r['records']:.0f} | {r['records_per_sec']:.0f} | "
              f"{r['images_decoded'] / r['records']:.3f} | {r['records_per_sec'] / base:.2f}x |")
PY
