#!/usr/bin/env bash
# Labelling an image folder (issue 13), one command: 2,000 generated JPEGs of 500x375, recipe usi,
# 224 px, a cheap ONNX teacher (Conv 8x8/8, GAP, Gemm), 2 loader threads and 1 ONNX Runtime thread,
# E = 1, 4 and 8 epochs: distill's per-record path (--block 0: every record decodes its JPEG and
# its partner's), distill's decode-once blocks (the default for image folders), and the peer a
# PyTorch user writes (scripts/peer_label.py: PIL in a 2-process pool, in-batch mixing,
# onnxruntime), all in this run. Page cache warm (the folder is read once before).
# Usage: scripts/bench-label-images.sh [FOLDER] [EPOCHS]   (defaults target/bench-jpegs, 1,4,8)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
folder=${1:-target/bench-jpegs}
epochs=${2:-1,4,8}
scripts/fetch-ort.sh >/dev/null
scripts/make-bench-jpegs.sh "$folder"
folder=$(cd "$folder" && pwd)
out=$PWD/target/bench-label
mkdir -p "$out"
cat "$folder"/train/*/* >/dev/null
DISTILL_BENCH_JPEGS="$folder" DISTILL_BENCH_OUT="$out" DISTILL_BENCH_EPOCHS="$epochs" \
    cargo bench --quiet -p teacher-infer --bench label_images | grep '^{' >"$out/runs.jsonl"
for e in ${epochs//,/ }; do
    target/bench-venv/bin/python scripts/peer_label.py "$folder/train" "$out/teacher.onnx" "$e" 2 \
        >>"$out/runs.jsonl"
done
target/bench-venv/bin/python - "$out/runs.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print("| E | path | records | s | records/s | decodes/record | decodes/sample | vs per-record | vs peer |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for e in sorted({r["epochs"] for r in runs}):
    at = {r["path"]: r for r in runs if r["epochs"] == e}
    base, peer = at["per-record"]["records_per_sec"], at["pil-pool-onnxruntime"]["records_per_sec"]
    for r in at.values():
        print(f"| {e} | {r['tool']} {r['path']} | {r['records']} | {r['seconds']:.1f} | "
              f"{r['records_per_sec']:.0f} | {r['images_decoded'] / r['records']:.3f} | "
              f"{r['images_decoded'] / r['samples']:.2f} | {r['records_per_sec'] / base:.2f}x | "
              f"{r['records_per_sec'] / peer:.2f}x |")
PY
