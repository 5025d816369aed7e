#!/usr/bin/env bash
# Stanton et al.'s transfer-set effect at MNIST scale (issue 28): does distilling through more
# (unlabelled) data raise the student's agreement with its teacher?
#
# The demo's teacher (data/demo/gen1/teacher.onnx) labels, with the demo's recipe and E = 8
# epochs of views:
#   - the first 2,000 training digits alone (labelled), and
#   - the same 2,000 labelled plus the other 6,000 training digits --unlabelled, as one store
#     (--data repeated: a list of two datasets).
# The demo's kd student (LeNet-5, τ = 4, kd weight 0.9 — its CE term covers only rows with a
# hard label —, SGD Nesterov 0.05, cosine, batch 64) trains SEEDS times from each:
#   - 2,000 labelled, EPOCHS epochs (same epochs),
#   - 2,000 labelled, 4 × EPOCHS epochs (same optimizer steps as the next row),
#   - 2,000 labelled + 6,000 unlabelled, EPOCHS epochs.
# Test agreement, KL and accuracy against the demo's test store (the 2,000 test digits), mean ±
# sd. When data/bench-online holds the same students trained on all 8,000 digits labelled
# (scripts/bench-online.sh, seeds 1…), they are printed as a reference row.
#
# Everything is written under data/bench-transfer and reused when run again (delete it to
# start over). Usage: scripts/bench-transfer.sh [SEEDS] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-3}
epochs=${2:-20}
scripts/main.sh >/dev/null # the demo: MNIST, its teacher and its stores (reused when there)
bin=target/release/distill
out=data/bench-transfer
demo=data/demo/gen1
mkdir -p "$out"

# The two datasets, as MNIST IDX directories: digits 0…1999 (with the test split, so the
# student's test metrics read it) and 2000…7999.
python3 - data/mnist "$out" <<'EOF'
import os, shutil, struct, sys
src, out = sys.argv[1], sys.argv[2]
def read(name):
    with open(os.path.join(src, name), "rb") as f:
        b = f.read()
    ndim = b[3]
    dims = struct.unpack(">" + "I" * ndim, b[4:4 + 4 * ndim])
    return b[:4], dims, b[4 + 4 * ndim:]
def write(path, magic, dims, body):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(magic + struct.pack(">" + "I" * len(dims), *dims) + body)
    os.replace(tmp, path)
imgs, labs = read("train-images-idx3-ubyte"), read("train-labels-idx1-ubyte")
n, px = imgs[1][0], imgs[1][1] * imgs[1][2]
assert n == labs[1][0] and n > 2000, (n, labs[1])
for name, lo, hi in [("labelled", 0, 2000), ("rest", 2000, n)]:
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "train-images-idx3-ubyte"), imgs[0], (hi - lo,) + imgs[1][1:],
          imgs[2][lo * px:hi * px])
    write(os.path.join(d, "train-labels-idx1-ubyte"), labs[0], (hi - lo,), labs[2][lo:hi])
for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    shutil.copyfile(os.path.join(src, name), os.path.join(out, "labelled", name))
EOF

recipe=scripts/demo-mnist.toml # the demo's recipe
small=(--data "$out/labelled")
both=(--data "$out/labelled" --data "$out/rest" --unlabelled)
label() { # out, data flags...
    local store=$1
    shift
    [ -f "$store/manifest.json" ] && return 0
    "$bin" label --json --teacher "$demo/teacher.onnx" "$@" --aug "$recipe" --epochs 8 \
        --seed 0 --topk 10 --out "$store" --force >"$store.json"
}
label "$out/labels-2k" "${small[@]}"
label "$out/labels-2k-6k" "${both[@]}"
student=(--model lenet5 --loss kd --temperature 4 --kd-weight 0.9 --optimizer sgd --nesterov
    --lr 0.05 --schedule cosine --batch 64 --mean 0.1307 --std 0.3081 --json
    --eval-labels "$demo/labels-test")
source scripts/bench-students.sh # train RUN FLAGS...
for s in $(seq 1 "$seeds"); do
    echo "transfer: seed $s" >&2
    train "$out/2k-e$epochs-s$s" "${small[@]}" --labels "$out/labels-2k" --epochs "$epochs" \
        --seed "$s"
    train "$out/2k-e$((4 * epochs))-s$s" "${small[@]}" --labels "$out/labels-2k" \
        --epochs $((4 * epochs)) --seed "$s"
    train "$out/2k-6k-e$epochs-s$s" "${both[@]}" --labels "$out/labels-2k-6k" \
        --epochs "$epochs" --seed "$s"
done

python3 - "$out" "$seeds" "$epochs" <<'EOF'
import os, sys
sys.path.insert(0, "scripts")
from bench_stats import fidelity
out, seeds, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(f"| demo kd student, {seeds} seeds | samples seen | agreement % | KL (nats) | accuracy % |")
print("|---|---|---|---|---|")
rows = [("2,000 labelled", f"2k-e{epochs}", 2000 * epochs),
        ("2,000 labelled, 4× epochs", f"2k-e{4 * epochs}", 8000 * epochs),
        ("2,000 labelled + 6,000 unlabelled", f"2k-6k-e{epochs}", 8000 * epochs)]
ref = os.path.join("data", "bench-online")
if all(os.path.exists(os.path.join(ref, f"e8-s{s}", "metrics.jsonl")) for s in range(1, seeds + 1)):
    rows.append(("8,000 labelled (bench-online's E = 8 runs)", os.path.join("..", "bench-online", "e8"),
                 8000 * epochs))
for name, prefix, samples in rows:
    _, _, cells = fidelity([os.path.join(out, f"{prefix}-s{s}") for s in range(1, seeds + 1)])
    print(f"| {name} | {samples:,} | {cells} |")
EOF
