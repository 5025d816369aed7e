#!/usr/bin/env bash
# GPU benchmark (issue 5): distill's labelling and training stages against PyTorch on one GPU, in
# one go, ending with one markdown table. The work is in scripts/gpu_bench.py; this wrapper picks
# a Python with numpy and PIL, finds libtorch and the CUDA libraries, and runs it.
#
#   scripts/gpu-bench.sh --distill PATH [--ort-lib LIB] [--work DIR] [--images N] [--smoke]
#                        [--python PY] [gpu_bench.py options: --label-epochs E --cifar-images N
#                        --threads T --timeout S]
#
# Rows (see BENCHMARKS.md, "GPU benchmark script"): JPEG generation; resnet50 export (fp32, fp16
# with casts inside); `distill label --device cuda` fp32 / fp16 over the JPEGs, and over
# pre-decoded 224x224 npy pixels without augmentation (the stage minus decoding); PyTorch eager
# resnet50 fp32 / TF32 / fp16 channels_last / bf16 autocast; the PyTorch DataLoader pipeline;
# resnet20 store labelling; `distill train --device tch:cuda:0` (one process and four at once)
# against the same resnet20 KD step in PyTorch eager. A row that cannot run says
# "skipped: reason"; the others still run.
#
# On the GPU machine (../shared/docs/gpu.md; no network there, at most 64 MiB per copy, and it is
# reset after ~30 s idle, so do these steps one right after the other):
#   1. here: build the tch binary, strip it, and make the ORT CUDA parts, all in target/ (which
#      git ignores, so they travel only when named as carried paths):
#        export LIBTORCH=/tmp/libtorch/torch LIBTORCH_BYPASS_VERSION_CHECK=1   # gpu.md, burn-tch
#        cargo build --release --features tch
#        mkdir -p target/gpu-bench && strip -o target/gpu-bench/distill target/release/distill
#        ../shared/tools/ort-cuda-parts.sh target/ortparts      # target/ortparts/00 .. NN
#   2. there, one copy each (a copy holds at most 64 MiB): every part, then the binary
#        mkdir -p /root/ortgpu && cp target/ortparts/00/* /root/ortgpu/      # then 01, 02 ...
#        cp target/gpu-bench/distill /root/distill
#      unpack and check the parts with the commands in the header of ort-cuda-parts.sh, then
#        export ORT_DYLIB_PATH=/root/ortgpu/libonnxruntime.so.1.31.1
#        N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
#        export LD_LIBRARY_PATH=/root/ortgpu:$N/cu13/lib:$N/cudnn/lib:$LD_LIBRARY_PATH
#        export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:$N/cu13/lib:$N/cudnn/lib:$N/nccl/lib:$N/cusparselt/lib:$N/nvshmem/lib:$LD_LIBRARY_PATH
#        scripts/gpu-bench.sh --distill /root/distill --ort-lib $ORT_DYLIB_PATH
#      (the script itself adds the folder of --ort-lib, torch's lib/ and the nvidia/*/lib folders
#      of the Python it uses to LD_LIBRARY_PATH; the exports above are the same thing by hand).
#      Defaults: 4,096 JPEGs, 2 labelled epochs per teacher, 25,000 npy images for training,
#      sized to finish well inside the 10-minute limit of one command there (not yet timed on a
#      GPU; --images, --label-epochs and --cifar-images scale it).
#
# Smoke test on a machine without a GPU (tiny sizes, `--device cpu` everywhere, PyTorch rows
# skipped when torch is absent; needs numpy, PIL and the onnx package, e.g. in .venv-py):
#   scripts/gpu-bench.sh --smoke --distill target/release/distill
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

die() { echo "gpu-bench.sh: $*" >&2; exit 2; }

distill=""
ort_lib="${ORT_DYLIB_PATH:-}"
python="${PYTHON:-}"
smoke=0
pass=()
while (($#)); do
  case $1 in
    --distill) distill=${2:?--distill needs a path}; shift 2 ;;
    --distill=*) distill=${1#*=}; shift ;;
    --ort-lib) ort_lib=${2:?--ort-lib needs a path}; shift 2 ;;
    --ort-lib=*) ort_lib=${1#*=}; shift ;;
    --python) python=${2:?--python needs a path}; shift 2 ;;
    --python=*) python=${1#*=}; shift ;;
    --smoke) smoke=1; pass+=(--smoke); shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done

[[ -n $distill ]] || die "--distill PATH is required (the distill binary; a --features tch build for GPU training)"
[[ -x $distill ]] || die "--distill $distill: not an executable file"
distill=$(realpath "$distill")
if [[ -z $ort_lib && $smoke == 1 ]]; then  # the CPU library of scripts/fetch-ort.sh, if there
  for f in "$repo"/.ort/libonnxruntime.so.*; do [[ -f $f ]] && ort_lib=$f; done
fi
if [[ -n $ort_lib ]]; then
  [[ -f $ort_lib ]] || die "--ort-lib / ORT_DYLIB_PATH $ort_lib: no such file"
  ort_lib=$(realpath "$ort_lib")
fi

# A Python with numpy and PIL: --python / $PYTHON, else python3, the GPU machine's torch venv,
# the repo's .venv-py.
usable() { "$1" -c 'import numpy, PIL' >/dev/null 2>&1; }
if [[ -n $python ]]; then
  usable "$python" || die "--python $python cannot import numpy and PIL"
else
  for p in python3 /opt/torch/.venv/bin/python3 "$repo/.venv-py/bin/python"; do
    if command -v "$p" >/dev/null 2>&1 && usable "$p"; then python=$p; break; fi
  done
  [[ -n $python ]] || die "no python3 with numpy and PIL (make one: python3 -m venv .venv-py && .venv-py/bin/pip install numpy pillow onnx)"
fi

# Library paths: the ORT library's folder, then libtorch and the pip CUDA libraries of this
# Python's torch (the tch build of distill needs libtorch at load time, even on the CPU).
libs=()
[[ -n $ort_lib ]] && libs+=("$(dirname "$ort_lib")")
if torch_dir=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null); then
  nv=$(dirname "$torch_dir")/nvidia
  for d in "$torch_dir/lib" "$nv/cu13/lib" "$nv/cudnn/lib" "$nv/nccl/lib" "$nv/cusparselt/lib" "$nv/nvshmem/lib"; do
    [[ -d $d ]] && libs+=("$d")
  done
fi
if ((${#libs[@]})); then
  joined=$(IFS=:; echo "${libs[*]}")
  export LD_LIBRARY_PATH="$joined${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

args=(--distill "$distill")
[[ -n $ort_lib ]] && args+=(--ort-lib "$ort_lib")
echo "gpu-bench.sh: python $python; LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" >&2
exec "$python" "$here/gpu_bench.py" "${args[@]}" "${pass[@]}"
