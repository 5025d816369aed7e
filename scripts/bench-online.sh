#!/usr/bin/env bash
# Offline against online distillation on MNIST (issue 28), two measurements:
#
# 1. Fidelity: the demo's kd student (LeNet-5, τ = 4, w = 0.9, the demo's recipe, SGD Nesterov
#    0.05, cosine, batch 64, EPOCHS epochs) trained SEEDS times each from the demo's store
#    (E = 8), from a store of E = EPOCHS, and online (`train --teacher`: the teacher run on
#    fresh views every epoch, its labels through the same top-10/q8 as the stores'): test
#    agreement, KL and accuracy, mean ± sd.
# 2. Cost per extra student with a teacher far dearer than the student: a ResNet-20 (width 2)
#    teacher trained TEACHER_EPOCHS epochs and exported; LeNet-5 students of COST_EPOCHS epochs
#    offline (one store labelled once, its time reported apart) and online; wall time each.
#
# Everything is written under data/bench-online and reused when run again (delete it to
# start over). Usage: scripts/bench-online.sh [SEEDS] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-5}
epochs=${2:-20}
teacher_epochs=${TEACHER_EPOCHS:-2}
cost_epochs=${COST_EPOCHS:-2}
scripts/main.sh >/dev/null # the demo: MNIST, its teacher and its stores (reused when there)
bin=target/release/distill
out=data/bench-online
demo=data/demo/gen1
mkdir -p "$out"
recipe=scripts/demo-mnist.toml # the demo's recipe, for the online runs and the E = EPOCHS store
label() { # teacher, epochs, out
    [ -f "$3/manifest.json" ] && return 0
    "$bin" label --json --teacher "$1" --data data/mnist --aug "$recipe" --epochs "$2" \
        --seed 0 --topk 10 --out "$3" --force >"$3.json"
}
student=(--data data/mnist --model lenet5 --loss kd --temperature 4 --kd-weight 0.9
    --optimizer sgd --nesterov --lr 0.05 --schedule cosine --batch 64 --mean 0.1307
    --std 0.3081 --json)
source scripts/bench-students.sh # train RUN FLAGS...

label "$demo/teacher.onnx" "$epochs" "$out/labels-e$epochs"
for s in $(seq 1 "$seeds"); do
    common=(--epochs "$epochs" --seed "$s" --eval-labels "$demo/labels-test")
    echo "fidelity: seed $s" >&2
    train "$out/e8-s$s" "${common[@]}" --labels "$demo/labels-train"
    train "$out/e$epochs-s$s" "${common[@]}" --labels "$out/labels-e$epochs"
    train "$out/online-s$s" "${common[@]}" --teacher "$demo/teacher.onnx" --aug "$recipe" \
        --topk 10 --codec q8
done

# The dear teacher: ResNet-20 at width 2 on the same digits.
big=$out/resnet20w2
if [ ! -f "$big.onnx" ]; then
    rm -rf "$big"
    "$bin" train --data data/mnist --model resnet20 --width 2 --loss ce --aug "$recipe" \
        --epochs "$teacher_epochs" --batch 64 --mean 0.1307 --std 0.3081 --test-split test \
        --out "$big" --json >"$big.json"
    "$bin" export "$big" --onnx "$big.onnx" >/dev/null
fi
label "$big.onnx" "$cost_epochs" "$out/labels-big"
for s in 1 2; do
    echo "cost: seed $s" >&2
    common=(--epochs "$cost_epochs" --seed "$s" --test-split none)
    train "$out/big-offline-s$s" "${common[@]}" --labels "$out/labels-big"
    train "$out/big-online-s$s" "${common[@]}" --teacher "$big.onnx" --aug "$recipe" \
        --topk 10 --codec q8
done

python3 - "$out" "$seeds" "$epochs" <<'EOF'
import json, os, statistics, sys
sys.path.insert(0, "scripts")
from bench_stats import fidelity, spread
out, seeds, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(os.path.join(out, "labels-big.json")) as f:
    label_s = json.load(f)["seconds"]
def seconds(run):
    with open(run + ".json") as f:
        return json.load(f)["seconds"]
rows = {}
print(f"| students ({seeds} seeds, {epochs} epochs) | agreement % | KL (nats) | accuracy % | s per student |")
print("|---|---|---|---|---|")
for name, prefix in [("offline, store E = 8", "e8"), (f"offline, store E = {epochs}", f"e{epochs}"),
                     ("online, fresh views", "online")]:
    runs = [os.path.join(out, f"{prefix}-s{s}") for s in range(1, seeds + 1)]
    _, ag, cells = fidelity(runs)
    sec = spread([seconds(r) for r in runs])
    rows[prefix] = ag
    print(f"| {name} | {cells} | {sec[0]:.1f} |")
on = rows["online"]
for prefix in ("e8", f"e{epochs}"):
    d = rows[prefix][0] - on[0]
    bound = max(0.2, on[1], rows[prefix][1])
    print(f"|{prefix} − online| agreement = {abs(d):.2f} points (target ≤ {bound:.2f}: "
          f"{'met' if abs(d) <= bound else 'not met'})")
off = [seconds(os.path.join(out, f"big-offline-s{s}")) for s in (1, 2)]
onl = [seconds(os.path.join(out, f"big-online-s{s}")) for s in (1, 2)]
print()
print("| ResNet-20 w2 teacher, LeNet-5 student | s per extra student |")
print("|---|---|")
print(f"| offline (store read back) | {statistics.mean(off):.1f} ({', '.join(f'{x:.1f}' for x in off)}) |")
print(f"| online (teacher on every batch) | {statistics.mean(onl):.1f} ({', '.join(f'{x:.1f}' for x in onl)}) |")
print(f"| labelling the store once | {label_s:.1f} |")
print(f"online / offline per extra student: {statistics.mean(onl) / statistics.mean(off):.2f}x")
EOF
