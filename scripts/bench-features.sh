#!/usr/bin/env bash
# Feature distillation (issue 29), two measurements:
#
# 1. Labelling speed with and without stored features, same run, same teacher: the image-folder
#    bench's cheap 224-px teacher given a pooled [batch, D] output (a 1x1 convolution to D
#    channels before its pool), 2,000 generated 500x375 JPEGs, recipe usi, decode-once blocks,
#    E epochs; `blocks` labels the logits alone, `blocks+features` adds --feature pooled (q8).
# 2. MNIST, 3 seeds: the demo's teacher (LeNet-5) exported with its penultimate layer
#    (`export --feature-output pooled`, 84 dims) labels the demo's store again with --feature
#    (E = 8, the demo's recipe) and a test store; the demo's kd student (LeNet-5, 20 epochs) trains
#    from it with kd alone and with kd + the feature term (--feature-weight W, cosine): test
#    agreement, KL, accuracy and feature cosine, mean ± sd.
#
# 3. Bytes per record and reconstruction of each feature codec on real teacher features
#    (teacher-infer's `features` bench over data/feature-sample/*.npy, when present: q8, f16, and
#    PCA to D/4 and D/8 fitted on nine views in ten).
# 4. As 2, the teacher read as embedding-only (--logits none: a store without soft labels): ce
#    students with and without the feature term, evaluated against 2's test store.
#
# Everything goes under data/bench-features (reused when run again; delete it to start over).
# Usage: scripts/bench-features.sh [SEEDS] [EPOCHS] [D] [LABEL_EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-3}
epochs=${2:-20}
dim=${3:-1280}
label_epochs=${4:-1,4}
weight=${FEATURE_WEIGHT:-1}
scripts/main.sh >/dev/null # the demo: MNIST, its teacher and its stores (reused when there)
bin=target/release/distill
out=data/bench-features
mkdir -p "$out"

# 1. Labelling speed.
scripts/make-bench-jpegs.sh target/bench-jpegs >/dev/null
folder=$(cd target/bench-jpegs && pwd)
cat "$folder"/train/*/* >/dev/null
if [ ! -s "$out/label-runs-d$dim.jsonl" ]; then
    DISTILL_BENCH_JPEGS="$folder" DISTILL_BENCH_OUT="$PWD/target/bench-label" \
        DISTILL_BENCH_EPOCHS="$label_epochs" DISTILL_BENCH_PATHS=blocks,blocks+features \
        DISTILL_BENCH_FEATURE="$dim" \
        cargo bench --quiet -p teacher-infer --bench label_images | grep '^{' \
        >"$out/label-runs-d$dim.jsonl.tmp"
    mv "$out/label-runs-d$dim.jsonl.tmp" "$out/label-runs-d$dim.jsonl"
fi

# 3 (first, it is quick). The codecs on real features, when scripts/feature-sample.py has written
#    them to data/feature-sample (it needs a venv with torch; see that script).
if ls data/feature-sample/*.npy >/dev/null 2>&1; then
    inputs=$(for f in data/feature-sample/*.npy; do
        printf '%s=%s,' "$(basename "$f" .npy)" "$PWD/$f"
    done)
    DISTILL_FEATURES=${inputs%,} cargo bench --quiet -p teacher-infer --bench features \
        >"$out/codecs.md"
fi

# 2. MNIST students.
demo=data/demo/gen1
teacher=$out/teacher.onnx
[ -f "$teacher" ] || "$bin" export data/demo/teacher --onnx "$teacher" \
    --feature-output pooled >/dev/null
label() { # out, flags...
    local store=$1
    shift
    [ -f "$store/manifest.json" ] && return 0
    "$bin" label --json --teacher "$teacher" --data data/mnist --topk 10 --seed 0 \
        --feature pooled --out "$store" --force "$@" >"$store.json"
}
label "$out/labels-train" --aug scripts/demo-mnist.toml --epochs 8
label "$out/labels-test" --split test --aug none
student=(--data data/mnist --labels "$out/labels-train" --eval-labels "$out/labels-test"
    --model lenet5 --loss kd --temperature 4 --kd-weight 0.9 --optimizer sgd --nesterov
    --lr 0.05 --schedule cosine --batch 64 --mean 0.1307 --std 0.3081 --epochs "$epochs" --json)
source scripts/bench-students.sh # train RUN FLAGS...
for s in $(seq 1 "$seeds"); do
    echo "features: seed $s" >&2
    train "$out/kd-s$s" --seed "$s"
    train "$out/kd-feat-w$weight-s$s" --seed "$s" --feature-weight "$weight"
done

# 4. The same teacher read as embedding-only (--logits none): a store of views and features, no
#    soft labels. Students with hard labels alone (ce) against ce + the feature term, evaluated
#    against the labelled test store (agreement and KL with the teacher's logits, feature cosine).
label "$out/labels-train-emb" --aug scripts/demo-mnist.toml --epochs 8 --logits none
student=(--data data/mnist --labels "$out/labels-train-emb" --eval-labels "$out/labels-test"
    --model lenet5 --loss ce --optimizer sgd --nesterov --lr 0.05 --schedule cosine --batch 64
    --mean 0.1307 --std 0.3081 --epochs "$epochs" --json)
for s in $(seq 1 "$seeds"); do
    echo "embedding-only: seed $s" >&2
    train "$out/emb-ce-s$s" --seed "$s"
    train "$out/emb-ce-feat-w$weight-s$s" --seed "$s" --feature-weight "$weight"
done

python3 - "$out" "$seeds" "$epochs" "$dim" "$weight" <<'EOF'
import json, os, sys
sys.path.insert(0, "scripts")
from bench_stats import fidelity, spread
out, seeds, epochs, dim, weight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
runs = [json.loads(l) for l in open(os.path.join(out, f"label-runs-d{dim}.jsonl"))]
codecs = os.path.join(out, "codecs.md")
if os.path.exists(codecs):
    print(open(codecs).read())
print(f"| E | path | records | s | records/s | label B/record | feature B/record | vs blocks |")
print("|---:|---|---:|---:|---:|---:|---:|---:|")
for e in sorted({r["epochs"] for r in runs}):
    at = {r["path"]: r for r in runs if r["epochs"] == e}
    base = at["blocks"]["records_per_sec"]
    for r in at.values():
        n = r["records"]
        print(f"| {e} | {r['path']} | {n} | {r['seconds']:.1f} | {r['records_per_sec']:.0f} | "
              f"{r['label_bytes'] / n:.1f} | {r['feature_bytes'] / n:.1f} | "
              f"{r['records_per_sec'] / base:.3f}x |")
print()
print(f"| demo kd student, {seeds} seeds, {epochs} epochs | agreement % | KL (nats) | accuracy % | feature cosine |")
print("|---|---|---|---|---|")
for name, prefix in [("kd", "kd"), (f"kd + feature term (cosine, w = {weight})", f"kd-feat-w{weight}"),
                     ("embedding-only store: ce", "emb-ce"),
                     (f"embedding-only store: ce + feature term (cosine, w = {weight})",
                      f"emb-ce-feat-w{weight}")]:
    m, _, cells = fidelity([os.path.join(out, f"{prefix}-s{s}") for s in range(1, seeds + 1)])
    cos = [x.get("test_feature_cosine") for x in m]
    cos = "–" if None in cos else "{:.4f} ± {:.4f}".format(*spread(cos))
    print(f"| {name} | {cells} | {cos} |")
EOF
