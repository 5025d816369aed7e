#!/usr/bin/env bash
# The main job: `distill demo`, the whole pipeline on real MNIST digits on the CPU (teacher,
# ONNX export, labelling, kd and ce students, evaluation, table and data/demo/report.html).
# Idempotent: finished stages under data/demo are reused, interrupted ones resume.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
scripts/fetch-ort.sh
cargo build --release --locked --bin distill
./target/release/distill demo --out data/demo --data data/mnist "$@"
