#!/usr/bin/env bash
# distill.Loader from Python against the Rust stream alone and against the loader a user writes
# without the module (scripts/peer_replay.py: the pure-Python reader plus a PIL/numpy replay in
# a 2-process pool), issue 14; same store, data, batch (128), 2 threads or workers, epoch, in
# one run: the E = 8 usi store of scripts/bench-label-images.sh (made first if missing), block
# windows (the default). The module is built with --release into target/bench-venv; the Rust
# figure is the "block windows" row of the stream bench.
# Usage: scripts/bench-python-loader.sh [FOLDER]   (default target/bench-jpegs)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
folder=${1:-target/bench-jpegs}
store=$PWD/target/bench-label/store-folder-blocks-e8
[ -f "$store/manifest.json" ] || scripts/bench-label-images.sh "$folder" 8 >/dev/null
scripts/make-bench-jpegs.sh "$folder"
folder=$(cd "$folder" && pwd)
target/bench-venv/bin/pip install --quiet --disable-pip-version-check "maturin==1.16.0" \
    -r python/requirements.txt
VIRTUAL_ENV="$PWD/target/bench-venv" target/bench-venv/bin/maturin develop --quiet --release \
    --locked -m python/Cargo.toml
cat "$folder"/train/*/* >/dev/null
for round in 1 2 3; do
    DISTILL_BENCH_TRAIN=0 DISTILL_BENCH_ONLY="block windows" DISTILL_BENCH_JPEGS="$folder" \
        DISTILL_BENCH_STORE="$store" cargo bench --quiet --workspace --bench stream \
        | grep '^{' | grep -v multi-crop
    target/bench-venv/bin/python - "$store" "$folder" <<'PY'
import json, sys, time
import distill
store, data = sys.argv[1], sys.argv[2]
loader = distill.Loader(store, data, 128, seed=0, temperature=1.0, threads=2,
                        mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
loader.set_epoch(1)
t0 = time.perf_counter()
n = sum(len(b["samples"]) for b in loader)
s = time.perf_counter() - t0
print(json.dumps({"stream": "distill.Loader (Python)", "records": n, "seconds": s,
                  "records_per_sec": n / s, "images_decoded": loader.images_decoded}))
PY
    target/bench-venv/bin/python scripts/peer_replay.py "$store" "$folder" 1 2
done
