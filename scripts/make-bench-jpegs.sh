#!/usr/bin/env bash
# The benchmark image folder (issue 13): FOLDER/train/c0..c9, 200 JPEGs each (2,000), 500x375,
# structured noise (12x16 blocks of 32 px plus pixel noise), quality 90. Idempotent: does nothing
# when FOLDER/train exists. Needs python3 with pip: pillow and numpy go into target/bench-venv,
# with onnxruntime for the Python peers.
# Usage: scripts/make-bench-jpegs.sh [FOLDER]   (default target/bench-jpegs)
set -euo pipefail
cd "$(dirname "$0")/.."
folder=${1:-target/bench-jpegs}
[ -x target/bench-venv/bin/python ] || python3 -m venv target/bench-venv
target/bench-venv/bin/pip install --quiet --disable-pip-version-check pillow numpy onnxruntime==1.31.1
[ -d "$folder/train" ] && exit 0
target/bench-venv/bin/python - "$folder" <<'PY'
import os, sys
import numpy as np
from PIL import Image
root = os.path.join(sys.argv[1], "train")
rng = np.random.default_rng(0)
for c in range(10):
    d = os.path.join(root, f"c{c}")
    os.makedirs(d, exist_ok=True)
    for i in range(200):
        base = rng.normal(0, 1, (12, 16, 3))
        img = np.kron(base, np.ones((32, 32, 1)))[:375, :500]
        img = (img * 40 + 128 + rng.normal(0, 20, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(d, f"{i:04d}.jpg"), quality=90)
PY
