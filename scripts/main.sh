#!/usr/bin/env bash
# The main job, until `distill demo` exists: write a realistic synthetic label store (100,000
# samples × 4 augmented epochs of a 1,000-class teacher, top-10) and inspect and verify it with
# the distill CLI. Idempotent: the store under data/synth-store is rewritten each run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=data/synth-store
cargo build --release --locked -p label-store --example synth
cargo build --release --locked --bin distill
./target/release/examples/synth --out "$out" --samples 100000 --epochs 4 --classes 1000 --k 10
./target/release/distill inspect "$out" --verify
./target/release/distill inspect "$out" --records 0..3 --temperature 4
