#!/usr/bin/env bash
# Tests the Python reader of label stores (python/) against `distill inspect`, record for record,
# then builds the `distill` extension module (PyO3, maturin) into the same environment and tests
# it against the pure-Python reader and `distill train`'s stream, and its resampling against Pillow. Creates the virtual environment
# .venv-py on first use (python3 -m venv; numpy, zstandard, maturin and pillow, for test JPEGs,
# from PyPI) and reuses it afterwards; stores are written under target/python-test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
# `cargo test --no-run` builds target/debug/distill and the synth example with the test
# suite's feature set, so after scripts/test.sh's `cargo test` nothing is rebuilt.
cargo test --workspace --locked --no-run --quiet
if [ ! -x .venv-py/bin/python ]; then
    python3 -m venv .venv-py
fi
.venv-py/bin/python -m pip install --quiet --disable-pip-version-check -r python/requirements.txt
.venv-py/bin/python python/test_reader.py target/debug/distill target/debug/examples/synth target/python-test
.venv-py/bin/python -m pip install --quiet --disable-pip-version-check "maturin==1.16.0" \
    -r python/requirements-test.txt
VIRTUAL_ENV="$PWD/.venv-py" .venv-py/bin/maturin develop --quiet --locked -m python/Cargo.toml
(cd python && ../.venv-py/bin/python test_module.py ../target/python-test ../target/debug/distill)
# Resampling against Pillow (the pinned version), byte for byte.
(cd python && ../.venv-py/bin/python test_pillow.py)
