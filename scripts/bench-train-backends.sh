#!/usr/bin/env bash
# Whole training epochs from a store, side by side in one run (issue 15): `distill train` on
# burn-flex (--device cpu), on LibTorch (--device tch:cpu, a binary built with --features tch,
# when DISTILL_TCH names it) and PyTorch eager (python/examples/train_kd.py fed by
# distill.Loader, in the venv DISTILL_TORCH_VENV, default target/torch-venv, when it has torch).
# Same model, batch (64), loss (kd, τ = 4, w = 0.9), optimizer (SGD, Nesterov 0.9, lr 0.05,
# weight decay 5e-4, per-step cosine), 2 loader threads, 3 epochs; the figure is the median
# epoch's images/s (training only). Models: lenet5 on the MNIST demo's store (scripts/main.sh
# makes it) and resnet20 on 4,000 generated 32×32 RGB images (npy; labelled here, `light`
# recipe, by a small teacher distill trains and exports).
# DISTILL_TCH_BASE names a second LibTorch build to run beside it (e.g. one without the patched
# burn-tch of vendor/, built from an older commit); DISTILL_DEVICES (default "cpu tch:cpu") picks
# which of distill's runs to make.
# Usage: scripts/bench-train-backends.sh      (prints one JSON line per run, then a table)
set -euo pipefail
cd "$(dirname "$0")/.."
distill=${DISTILL:-target/release/distill}
venv=${DISTILL_TORCH_VENV:-target/torch-venv}
out=target/bench-train
mkdir -p "$out"
[ -f data/demo/gen1/labels-train/manifest.json ] || scripts/main.sh >/dev/null
# 32×32 RGB images held in memory (npy, 10 classes of structured noise): no JPEG decoding, so
# the loader does not compete with the backends for the two cores.
rgbdata=$out/rgb32-data
rgb=$out/rgb32-store
if [ ! -f "$rgb/manifest.json" ] || [ ! -f "$rgbdata/train_images.npy" ]; then
    rm -rf "$out/rgb32-teacher" "$rgb" "$rgbdata"
    mkdir -p "$rgbdata"
    py=python3
    for p in "$venv/bin/python" .venv-py/bin/python target/bench-venv/bin/python; do
        if [ -x "$p" ] && "$p" -c "import numpy" 2>/dev/null; then py=$p; break; fi
    done
    "$py" - "$rgbdata" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
n = 4000
labels = (np.arange(n) * 7 % 10).astype(np.uint8)
y, x = np.mgrid[0:32, 0:32]
img = rng.integers(0, 90, (n, 32, 32, 3)).astype(np.int32)
for c in range(10):
    band = ((x + y * (c + 1)) % 10 < 3)[..., None] * np.array([20 * c, 200 - 15 * c, 120])
    img[labels == c] += band.astype(np.int32)
np.save(f"{sys.argv[1]}/train_images.npy", np.clip(img, 0, 255).astype(np.uint8))
np.save(f"{sys.argv[1]}/train_labels.npy", labels)
PY
    "$distill" train --data "$rgbdata" --model mlp --loss ce --epochs 1 --batch 64 \
        --test-split none --out "$out/rgb32-teacher" --json >/dev/null
    "$distill" export "$out/rgb32-teacher" --onnx "$out/rgb32-teacher.onnx" >/dev/null
    "$distill" label --teacher "$out/rgb32-teacher.onnx" --data "$rgbdata" --aug light \
        --epochs 3 --out "$rgb" --json >/dev/null
fi
common=(--loss kd --temperature 4 --kd-weight 0.9 --epochs 3 --batch 64 --lr 0.05
        --optimizer sgd --momentum 0.9 --nesterov --weight-decay 5e-4 --schedule cosine
        --threads 2 --test-split none --seed 0)
median() { python3 -c "import json,sys; v=sorted(json.loads(l)['images_per_sec'] for l in open(sys.argv[1])); print(v[len(v)//2])" "$1"; }
results=()
for model in lenet5 resnet20; do
    if [ "$model" = lenet5 ]; then
        data=data/mnist store=data/demo/gen1/labels-train norm=(--mean 0.1307 --std 0.3081)
        pynorm=(--mean 0.1307 --std 0.3081)
    else
        data=$rgbdata store=$rgb norm=(--mean 0.5,0.5,0.5 --std 0.25,0.25,0.25)
        pynorm=(--mean 0.5 0.5 0.5 --std 0.25 0.25 0.25)
    fi
    runs=()
    for dev in ${DISTILL_DEVICES:-cpu tch:cpu}; do
        if [ "$dev" = tch:cpu ]; then
            if [ -n "${DISTILL_TCH_BASE:-}" ]; then
                runs+=("tch:cpu|$DISTILL_TCH_BASE|tch:cpu (base)")
            fi
            if [ -n "${DISTILL_TCH:-}" ]; then
                runs+=("tch:cpu|$DISTILL_TCH|tch:cpu")
            fi
        else
            runs+=("$dev|$distill|$dev")
        fi
    done
    for r in "${runs[@]}"; do
        IFS='|' read -r dev bin label <<<"$r"
        run=$out/$model-${label//[^a-z0-9]/-}
        rm -rf "$run"
        "$bin" train --data "$data" --labels "$store" --model "$model" --device "$dev" \
            "${common[@]}" "${norm[@]}" --out "$run" --json >/dev/null
        r=$(median "$run/metrics.jsonl")
        echo "{\"model\": \"$model\", \"run\": \"distill train --device $label\", \"images_per_sec\": $r}"
        results+=("$model|distill $label|$r")
    done
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import torch, distill" 2>/dev/null; then
        "$venv/bin/python" python/examples/train_kd.py --store "$store" --data "$data" \
            --model "$model" --epochs 3 --batch 64 --threads 2 "${pynorm[@]}" \
            --json "$out/$model-torch.json" >/dev/null
        r=$(python3 -c "import json,sys; v=sorted(e['images_per_sec'] for e in json.load(open(sys.argv[1]))['epochs']); print(v[len(v)//2])" "$out/$model-torch.json")
        echo "{\"model\": \"$model\", \"run\": \"PyTorch eager (train_kd.py)\", \"images_per_sec\": $r}"
        results+=("$model|PyTorch eager|$r")
    fi
done
python3 - "${results[@]}" <<'PY'
import sys
rows = [r.split("|") for r in sys.argv[1:]]
torch = {m: float(v) for m, who, v in rows if who == "PyTorch eager"}
print(f"{'model':9} {'run':25} {'images/s':>9} {'vs PyTorch':>10}")
for m, who, v in rows:
    ratio = f"{float(v) / torch[m]:.2f}x" if m in torch else "-"
    print(f"{m:9} {who:25} {float(v):9.0f} {ratio:>10}")
PY
