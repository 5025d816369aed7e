#!/usr/bin/env bash
# The test command: formatting, lints, and every test of the workspace.
# Needs only a Rust toolchain (with rustfmt and clippy) and a C compiler (zstd-sys builds zstd).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
