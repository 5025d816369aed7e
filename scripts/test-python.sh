#!/usr/bin/env bash
# Tests the Python reader of label stores (python/) against `distill inspect`, record for record.
# Creates the virtual environment .venv-py on first use (python3 -m venv; numpy and zstandard
# from PyPI) and reuses it afterwards; stores are written under target/python-test.
set -euo pipefail
cd "$(dirname "$0")/.."
# `cargo test --no-run` builds target/debug/distill and the synth example with the test
# suite's feature set, so after scripts/test.sh's `cargo test` nothing is rebuilt.
cargo test --workspace --locked --no-run --quiet
if [ ! -x .venv-py/bin/python ]; then
    python3 -m venv .venv-py
fi
.venv-py/bin/python -m pip install --quiet --disable-pip-version-check -r python/requirements.txt
.venv-py/bin/python python/test_reader.py target/debug/distill target/debug/examples/synth target/python-test
