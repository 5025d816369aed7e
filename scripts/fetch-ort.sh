#!/usr/bin/env bash
# Fetches ONNX Runtime 1.31.1 (CPU) for the labelling stage: downloads the PyPI wheel
# onnxruntime==1.31.1 and unpacks libonnxruntime.so.1.31.1 into .ort/ (git-ignored), where
# `distill` looks for it last (after --ort-lib, ORT_DYLIB_PATH and a pip-installed onnxruntime).
# Idempotent: a library with the expected SHA-256 is kept. Needs python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
ver=1.31.1
lib=.ort/libonnxruntime.so.$ver
sum=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
if [ -f "$lib" ] && echo "$sum  $lib" | sha256sum --check --status; then
  echo "$lib is there (checksum matches)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp \
  "onnxruntime==$ver" -d "$tmp"
mkdir -p .ort
python3 - "$tmp" "$ver" <<'PY'
import glob, sys, zipfile
tmp, ver = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/onnxruntime-{ver}-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    with z.open(f"onnxruntime/capi/libonnxruntime.so.{ver}") as src, open(f".ort/libonnxruntime.so.{ver}.tmp", "wb") as dst:
        dst.write(src.read())
PY
echo "$sum  $lib.tmp" | sha256sum --check --status || { echo "checksum mismatch for $lib" >&2; exit 1; }
mv "$lib.tmp" "$lib"
echo "wrote $lib"
