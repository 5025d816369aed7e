#!/usr/bin/env bash
# The process allocator (issue 15): the same `distill` binary on mimalloc with distill's purge delay
# (10 s, its default, src/alloc.rs), on mimalloc purging after 1 s and never purging
# (MIMALLOC_PURGE_DELAY=1000 / -1) and on the system allocator (DISTILL_ALLOCATOR=system, glibc
# here), rounds alternating, in one run. Workloads: lenet5 training from the 224 px JPEG store (where glibc's fresh mmap per big
# burn-flex buffer cost half the epoch), lenet5 on the MNIST demo store (small buffers: must not
# lose), and labelling the 2,000 bench JPEGs (E = 4, usi, 224 px). With DISTILL_BENCH_RESNET18=1
# also the peak RSS of the first 120 s of 224 px resnet18 with 16 loader threads (the loader-memory
# figure of BENCHMARKS.md). Per run: images/s (or records/s), user and system seconds, minor page
# faults and peak RSS from /usr/bin/time -v.
# Usage: scripts/bench-allocator.sh [ROUNDS]   (default 2; prints one JSON line per run, then a table)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
rounds=${1:-2}
distill=${DISTILL:-target/release/distill}
out=target/bench-alloc
jpegs=target/bench-jpegs
store=target/bench-label/store-folder-blocks-e8
mkdir -p "$out"
scripts/fetch-ort.sh >/dev/null
[ -f data/demo/gen1/labels-train/manifest.json ] || scripts/main.sh >/dev/null
[ -f "$store/manifest.json" ] || scripts/bench-label-images.sh "$jpegs" 8 >/dev/null
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
cat "$jpegs"/train/*/* >/dev/null
inet=(--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
runs=$out/runs.jsonl
: >"$runs"

# One measured command: NAME ALLOC RATE-KIND RUN-DIR CMD...; RATE-KIND says where its rate is.
measure() {
    local name=$1 alloc=$2 kind=$3 dir=$4
    shift 4
    rm -rf "$dir"
    local env=()
    case $alloc in
        system) env=(DISTILL_ALLOCATOR=system) ;;
        mimalloc-1s) env=(MIMALLOC_PURGE_DELAY=1000) ;;
        mimalloc-no-purge) env=(MIMALLOC_PURGE_DELAY=-1) ;;
    esac
    env "${env[@]}" /usr/bin/time -v -o "$out/time.txt" "$@" >"$out/stdout.txt" 2>"$out/stderr.txt" || {
        # `timeout` ends the resnet18 run on purpose (status 124); anything else is a failure.
        st=$?
        if [ "$kind" != rss ] || ! grep -q "Exit status: 124" "$out/time.txt"; then
            cat "$out/stderr.txt" >&2
            echo "$name ($alloc) failed with status $st" >&2
            exit 1
        fi
    }
    python3 - "$name" "$alloc" "$kind" "$dir" "$out/time.txt" "$out/stdout.txt" <<'PY' | tee -a "$runs"
import json, sys
name, alloc, kind, run, timef, stdout = sys.argv[1:]
t = {}
for line in open(timef):
    k, _, v = line.strip().rpartition(": ")
    t[k] = v
rate = None
if kind == "train":
    epochs = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
    rate = epochs[-1]["images_per_sec"]
elif kind == "label":
    s = json.loads(open(stdout).read())
    rate = s["labelled"] / s["seconds"]
print(json.dumps({
    "workload": name, "allocator": alloc, "rate": rate,
    "user_s": float(t["User time (seconds)"]), "system_s": float(t["System time (seconds)"]),
    "minor_faults": int(t["Minor (reclaiming a frame) page faults"]),
    "peak_rss_mb": int(t["Maximum resident set size (kbytes)"]) / 1024,
}))
PY
}

for round in $(seq "$rounds"); do
    for alloc in system mimalloc mimalloc-1s mimalloc-no-purge; do
        measure "lenet5 224 px JPEG, flex" "$alloc" train "$out/lenet5-224-$alloc" \
            "$distill" train --data "$jpegs" --labels "$store" --model lenet5 --loss kd \
            --batch 64 --threads 2 --epochs 1 --test-split none "${inet[@]}" \
            --out "$out/lenet5-224-$alloc" --json
        measure "lenet5 MNIST, flex" "$alloc" train "$out/lenet5-mnist-$alloc" \
            "$distill" train --data data/mnist --labels data/demo/gen1/labels-train \
            --model lenet5 --loss kd --batch 64 --threads 2 --epochs 1 --test-split none \
            --mean 0.1307 --std 0.3081 --out "$out/lenet5-mnist-$alloc" --json
        measure "label 2,000 JPEGs, E = 4" "$alloc" label "$out/label-$alloc" \
            "$distill" label --teacher target/bench-label/teacher.onnx --data "$jpegs" \
            --aug usi --epochs 4 --size 224 "${inet[@]}" --threads 2 --session-threads 1 \
            --out "$out/label-$alloc" --json
        if [ "${DISTILL_BENCH_RESNET18:-0}" = 1 ] && [ "$round" = 1 ]; then
            measure "resnet18 224 px, 16 loader threads, 120 s" "$alloc" rss \
                "$out/resnet18-$alloc" timeout 120 "$distill" train --data "$jpegs" \
                --labels "$store" --model resnet18 --loss kd --batch 64 --threads 16 \
                --epochs 1 --test-split none "${inet[@]}" --out "$out/resnet18-$alloc" --json
        fi
    done
done

python3 - "$runs" <<'PY'
import json, sys, statistics as st
runs = [json.loads(l) for l in open(sys.argv[1])]
print("| workload | allocator | rate (median) | user s | system s | minor faults | peak RSS MB | rate vs system |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for w in dict.fromkeys(r["workload"] for r in runs):
    med = {}
    for a in ("system", "mimalloc", "mimalloc-1s", "mimalloc-no-purge"):
        rs = [r for r in runs if r["workload"] == w and r["allocator"] == a]
        m = {k: st.median(r[k] for r in rs) for k in ("user_s", "system_s", "minor_faults", "peak_rss_mb")}
        m["rate"] = st.median(r["rate"] for r in rs) if rs[0]["rate"] is not None else None
        med[a] = m
    for a, m in med.items():
        rate = f"{m['rate']:.1f}" if m["rate"] is not None else "-"
        ratio = f"{m['rate'] / med['system']['rate']:.2f}x" if m["rate"] is not None else "-"
        print(f"| {w} | {a} | {rate} | {m['user_s']:.1f} | {m['system_s']:.1f} | "
              f"{m['minor_faults']:,.0f} | {m['peak_rss_mb']:,.0f} | {ratio} |")
PY
