#!/usr/bin/env python3
"""GPU benchmark of distill against PyTorch (issue 5). Run it through scripts/gpu-bench.sh,
which picks the Python interpreter and sets the library paths; its header says how to run it on
the GPU machine.

Steps (each one that cannot run becomes a "skipped: reason" row; the script still finishes):
  a. N JPEGs of 500x375 in ROOT/train/CLASS/*.jpg, 1000 class folders, structured random content
  b. torchvision resnet50 (random init, BatchNorm statistics calibrated on random images so that
     eval-mode activations stay in fp16 range) exported to ONNX opset 17, dynamic batch: fp32, and
     fp16 with f32 input/output (casts inside)
  c. `distill label --device cuda` with both teachers over the JPEG folder (--device cpu in smoke)
  d. PyTorch eager inference of the same resnet50 on device-resident batches
  e. the PyTorch pipeline a user writes today: DataLoader + PIL + RandomResizedCrop + flip,
     mixup/cutmix on the GPU, fp16 channels_last teacher, top-10 to the CPU
  f. training: a CIFAR-like npy dataset, a resnet20 teacher (`distill train --loss ce`, `distill
     export`), a store (`distill label`), `distill train --loss kd` (one process, then four at
     once) against the same resnet20 / loss / SGD in PyTorch eager
  g. one markdown table, last, on stdout (also written to WORK/table.md; WORK/results.json)

Everything but the final table goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

CLASSES = 1000


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Skip(Exception):
    """A step that cannot run here; the message becomes the row's reason."""


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Results and the table

class Results:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, key, what, value=None, unit="images/s", notes="", skipped=None):
        self.rows.append(
            dict(key=key, what=what, value=value, unit=unit, notes=notes, skipped=skipped)
        )

    def get(self, key):
        for r in self.rows:
            if r["key"] == key and r["value"] is not None:
                return r["value"]
        return None

    def step(self, key, what, fn, unit="images/s"):
        """Runs fn() -> (value, notes) and records a row, or a skipped row on any failure."""
        t0 = time.time()
        log(f"\n== {what}")
        try:
            value, notes = fn()
            self.add(key, what, value, unit, notes)
            log(f"== {what}: {fmt(value)} {unit} ({time.time() - t0:.1f}s) {notes}")
        except Skip as e:
            self.add(key, what, skipped=str(e))
            log(f"== {what}: skipped: {e}")
        except Exception as e:  # a benchmark row must not take the others down
            traceback.print_exc(file=sys.stderr)
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            self.add(key, what, skipped=reason)
            log(f"== {what}: skipped: {reason}")


def fmt(v):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:,.1f}"
    return f"{v:,.2f}"


def cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


RATIOS = {
    # row: [(other row, label), ...] — ratio = row / other
    "label_fp32": [("label_fp32_raw", "no-decode stage"), ("pt_tf32", "bare PyTorch TF32"),
                   ("pt_pipeline", "PyTorch pipeline")],
    "label_fp16": [("label_fp16_raw", "no-decode stage"), ("pt_fp16", "bare PyTorch fp16 CL"),
                   ("pt_pipeline", "PyTorch pipeline")],
    "label_fp32_raw": [("pt_tf32", "bare PyTorch TF32")],
    "label_fp16_raw": [("pt_fp16", "bare PyTorch fp16 CL")],
    "label_cpu_fp32": [("label_cpu_fp32_raw", "no-decode stage"), ("pt_pipeline", "PyTorch pipeline")],
    "label_cpu_fp16": [("label_cpu_fp32_raw", "fp32 no-decode stage"), ("pt_pipeline", "PyTorch pipeline")],
    "pt_tf32": [("pt_fp32", "fp32")],
    "pt_fp16": [("pt_fp32", "fp32")],
    "pt_bf16": [("pt_fp32", "fp32")],
    "pt_pipeline": [("pt_fp16", "bare PyTorch fp16 CL")],
    "train_1": [("pt_train_fp32", "PyTorch fp32"), ("pt_train_default", "PyTorch default")],
    "train_4": [("pt_train_fp32", "PyTorch fp32"), ("train_1", "one process")],
}


def table(res: Results) -> str:
    out = [
        "| # | measurement | figure | ratios | notes |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(res.rows, 1):
        if r["value"] is None:
            out.append(f"| {i} | {cell(r['what'])} | skipped: {cell(r['skipped'])} | | |")
            continue
        ratios = []
        for other, label in RATIOS.get(r["key"], []):
            o = res.get(other)
            if o:
                ratios.append(f"{r['value'] / o:.2f}× {label}")
        out.append(
            f"| {i} | {cell(r['what'])} | {fmt(r['value'])} {r['unit']} | "
            f"{cell('; '.join(ratios))} | {cell(r['notes'])} |"
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Running distill

class Distill:
    def __init__(self, binary: Path, ort_lib: str | None, work: Path, timeout: int):
        self.binary = binary
        self.ort_lib = ort_lib
        self.work = work
        self.timeout = timeout

    def run(self, args, timeout=None, check=True):
        cmd = [str(self.binary)] + [str(a) for a in args]
        log("$ " + " ".join(cmd))
        t0 = time.time()
        try:
            p = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout or self.timeout
            )
        except subprocess.TimeoutExpired:
            raise Skip(f"`distill {args[0]}` ran past {timeout or self.timeout}s")
        secs = time.time() - t0
        with open(self.work / "distill.log", "a") as f:
            f.write(f"$ {' '.join(cmd)}\n[rc {p.returncode}, {secs:.1f}s]\n")
            f.write(p.stdout[-20000:] + "\n--- stderr\n" + p.stderr[-20000:] + "\n")
        if check and p.returncode != 0:
            raise Skip(f"`distill {args[0]}` failed: {last_line(p.stderr or p.stdout)}")
        return p, secs

    def popen(self, args, out_path: Path):
        cmd = [str(self.binary)] + [str(a) for a in args]
        log("$ " + " ".join(cmd) + " &")
        f = open(out_path, "w")
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, text=True), f

    def label_args(self):
        return ["--ort-lib", self.ort_lib] if self.ort_lib else []


def last_line(s: str) -> str:
    s = re.sub(r"\x1b\[[0-9;]*m", "", s)  # colours of log lines
    lines = [l.strip() for l in s.strip().splitlines() if l.strip()]
    # prefer the error line(s) of anyhow's report
    for l in lines:
        if l.lower().startswith("error"):
            rest = lines[lines.index(l):]
            return " / ".join(rest)[:300]
    return (lines[-1] if lines else "no output")[:300]


def parse_json(stdout: str):
    i = stdout.find("{")
    if i < 0:
        raise Skip(f"no JSON in output: {stdout[:100]!r}")
    return json.loads(stdout[i:])


def last_metrics(run_dir: Path) -> dict:
    files = sorted(run_dir.rglob("metrics.jsonl"))
    if not files:
        raise Skip(f"no metrics.jsonl under {run_dir}")
    lines = [l for l in files[0].read_text().splitlines() if l.strip()]
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------
# a. JPEGs

def _make_jpeg(job):
    from PIL import Image, ImageDraw

    idx, w, h, seed, path = job
    rng = np.random.default_rng([seed, idx])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx /= w
    yy /= h
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        a, bx, by, amp, fr, ph = rng.uniform([20, -120, -120, 0, 2, 0], [235, 120, 120, 40, 12, 6.3])
        img[..., c] = a + bx * (xx - 0.5) + by * (yy - 0.5) + amp * np.sin(fr * (xx + yy) + ph)
    img += rng.normal(0, 10, img.shape).astype(np.float32)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 7))):
        x0, x1 = sorted(rng.integers(0, w, 2).tolist())
        y0, y1 = sorted(rng.integers(0, h, 2).tolist())
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            d.rectangle([x0, y0, x1, y1], fill=color)
        else:
            d.ellipse([x0, y0, x1, y1], fill=color)
    im.save(path, quality=90)


def make_jpegs(root: Path, n: int, w: int, h: int, workers: int) -> float:
    """ROOT/train/cNNNN/imgNNNNNN.jpg, image i in class i % 1000 (made again on every run: the
    same bytes, from the seed)."""
    if n < CLASSES:
        raise Skip(f"--images {n}: the folder needs at least one image in each of {CLASSES} classes")
    stamp = root / f"done-{n}-{w}x{h}"
    shutil.rmtree(root, ignore_errors=True)
    train = root / "train"
    for c in range(CLASSES):
        (train / f"c{c:04d}").mkdir(parents=True)
    jobs = [(i, w, h, 0, train / f"c{i % CLASSES:04d}" / f"img{i:06d}.jpg") for i in range(n)]
    t0 = time.time()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for _ in pool.imap_unordered(_make_jpeg, jobs, chunksize=16):
            pass
    stamp.touch()
    return time.time() - t0


# ---------------------------------------------------------------------------------------------
# b. teachers

def torch_or_none():
    try:
        import torch  # noqa: F401

        return torch
    except Exception as e:  # ImportError, or a broken CUDA install
        log(f"torch not importable: {e}")
        return None


def structured_batch(torch, n, size, device, seed=0):
    """Smooth random images with noise in [0, 1] (never zeros), normalized like ImageNet."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    x = (x + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)


def resnet50(torch, device, size):
    """torchvision resnet50, random init, BatchNorm statistics from random images."""
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet50(weights=None, num_classes=CLASSES)
    m.to(device)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average
    m.train()
    with torch.no_grad():
        for s in range(4):
            m(structured_batch(torch, 16, size, device, seed=100 + s))
    return m.eval()


def export_resnet50(torch, model, fp32_path: Path, fp16_path: Path, device, size):
    nn = torch.nn

    class Half(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x.half()).float()

    dummy = structured_batch(torch, 2, size, device)
    dyn = {"input": {0: "batch"}, "logits": {0: "batch"}}

    def export(m, path):
        kw = dict(
            opset_version=17, input_names=["input"], output_names=["logits"], dynamic_axes=dyn
        )
        try:  # the TorchScript exporter: reads dynamic_axes, writes opset 17 directly
            torch.onnx.export(m, (dummy,), str(path), dynamo=False, **kw)
        except TypeError:  # a torch without the dynamo argument
            torch.onnx.export(m, (dummy,), str(path), **kw)
        except Exception as e:  # a torch without the TorchScript exporter: torch.export's
            log(f"TorchScript export failed ({e}); trying dynamo=True")
            del kw["dynamic_axes"]
            batch = torch.export.Dim("batch")
            torch.onnx.export(m, (dummy,), str(path), dynamo=True,
                              dynamic_shapes=({0: batch},), **kw)

    t0 = time.time()
    export(model, fp32_path)
    half = Half(copy.deepcopy(model).half()).eval()
    export(half, fp16_path)
    return time.time() - t0


def tiny_teacher(path: Path, size: int, fp16: bool):
    """Flatten + Gemm to 1000 classes over [batch, 3, size, size], dynamic batch, opset 17; the
    fp16 one casts its f32 input to f16 and its logits back to f32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    d = 3 * size * size
    dt = np.float16 if fp16 else np.float32
    w = numpy_helper.from_array((rng.normal(0, 1, (CLASSES, d)) / math.sqrt(d) * 4).astype(dt), "W")
    b = numpy_helper.from_array((rng.normal(0, 0.1, CLASSES)).astype(dt), "B")
    nodes = []
    x = "input"
    if fp16:
        nodes.append(helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16))
        x = "x16"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    out = "logits16" if fp16 else "logits"
    nodes.append(helper.make_node("Gemm", ["flat", "W", "B"], [out], transB=1))
    if fp16:
        nodes.append(helper.make_node("Cast", ["logits16"], ["logits"], to=TensorProto.FLOAT))
    g = helper.make_graph(
        nodes,
        "tiny_teacher",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [w, b],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="gpu_bench")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


# ---------------------------------------------------------------------------------------------
# d. PyTorch eager inference

def sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eager_inference(torch, model, device, mode, batch, size, warmup, iters):
    torch.backends.cudnn.benchmark = True
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    m = copy.deepcopy(model).eval()
    x = structured_batch(torch, batch, size, device, seed=7)
    ctx = _nullcontext()
    if mode == "fp16":
        m = m.half().to(memory_format=torch.channels_last)
        x = x.half().contiguous(memory_format=torch.channels_last)
    elif mode == "bf16":
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    with torch.inference_mode(), ctx:
        for _ in range(warmup):
            y = m(x)
        sync(torch, device)
        t0 = time.perf_counter()
        for _ in range(iters):
            y = m(x)
        sync(torch, device)
        secs = time.perf_counter() - t0
    if not torch.isfinite(y.float()).all():
        raise Skip(f"{mode}: non-finite logits")
    del m, x, y
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return batch * iters / secs


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ---------------------------------------------------------------------------------------------
# e. The PyTorch pipeline a user writes today

def _seed_worker(worker_id):
    import random

    import torch

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class JpegFolder:
    """torchvision.datasets.ImageFolder in a few lines: PIL decode, RandomResizedCrop, flip,
    uint8 CHW tensor (normalized on the GPU)."""

    def __init__(self, root: Path, size: int):
        from torchvision import transforms

        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.items = [
            (str(f), c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())
        ]
        self.tf = transforms.Compose(
            [
                transforms.RandomResizedCrop(size, antialias=True),
                transforms.RandomHorizontalFlip(),
                transforms.PILToTensor(),
            ]
        )

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as im:
            return self.tf(im.convert("RGB")), label


def mix_on_gpu(torch, x, gen_seed):
    """timm-style batch mixing: mixup (alpha 0.8) or cutmix (alpha 1.0), switch 0.5, partner =
    the batch reversed."""
    rng = np.random.default_rng(gen_seed)
    partner = x.flip(0)
    if rng.random() < 0.5:
        lam = float(rng.beta(0.8, 0.8))
        return x.mul_(lam).add_(partner, alpha=1 - lam)
    lam = float(rng.beta(1.0, 1.0))
    h, w = x.shape[-2:]
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1].clone()
    return x


def pytorch_pipeline(torch, model, device, root: Path, batch, size, workers, epochs, half):
    from torch.utils.data import DataLoader

    torch.backends.cudnn.benchmark = True
    ds = JpegFolder(root, size)
    dl = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_seed_worker,
        drop_last=False,
    )
    m = copy.deepcopy(model).eval()
    dtype = torch.float16 if half else torch.float32
    m = m.to(dtype).to(memory_format=torch.channels_last)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device, dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device, dtype=dtype).view(1, 3, 1, 1) * 255
    seen, secs, step = 0, 0.0, 0
    with torch.inference_mode():
        for epoch in range(epochs):
            sync(torch, device)
            t0 = time.perf_counter()
            n = 0
            for x, _y in dl:
                x = x.to(device, non_blocking=True).to(dtype)
                x = x.contiguous(memory_format=torch.channels_last).sub_(mean).div_(std)
                x = mix_on_gpu(torch, x, step)
                step += 1
                vals, idx = m(x).float().topk(10, dim=1)
                vals, idx = vals.cpu(), idx.cpu()  # waits for the GPU
                n += x.shape[0]
            secs_epoch = time.perf_counter() - t0
            log(f"   pipeline epoch {epoch}: {n / secs_epoch:,.0f} images/s")
            if epoch > 0 or epochs == 1:  # the first epoch starts workers and tunes cuDNN
                seen += n
                secs += secs_epoch
    del dl
    return seen / secs


# ---------------------------------------------------------------------------------------------
# f. training

def make_npy(d: Path, n: int, size: int = 32, classes: int = 10, seed=0):
    """train_images.npy u8 [N,size,size,3] (a class colour, a gradient, noise) and
    train_labels.npy (every class present); reused when already there."""
    if n < classes:
        raise Skip(f"{n} images cannot hold {classes} classes")
    stamp = d / f"done-{n}-{size}-{classes}"
    if stamp.exists():
        return
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % classes).astype(np.int64)
    rng.shuffle(labels)
    palette = rng.uniform(40, 215, (classes, 3)).astype(np.float32)
    imgs = np.lib.format.open_memmap(d / "train_images.npy", "w+", np.uint8, (n, size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) - 0.5
    step = max(1, (1 << 22) // (size * size))
    for s in range(0, n, step):
        e = min(n, s + step)
        k = e - s
        g = rng.uniform(-80, 80, (k, 2, 3)).astype(np.float32)
        x = (
            palette[labels[s:e]][:, None, None, :]
            + g[:, None, None, 0, :] * xx[None, :, :, None]
            + g[:, None, None, 1, :] * yy[None, :, :, None]
            + 20 * rng.standard_normal((k, size, size, 3), dtype=np.float32)
        )
        imgs[s:e] = np.clip(x, 0, 255).astype(np.uint8)
    imgs.flush()
    del imgs
    np.save(d / "train_labels.npy", labels)
    stamp.touch()


def make_cifar_like(d: Path, n: int):
    make_npy(d, n, 32, 10)


def resnet20(torch, classes=10):
    """CIFAR ResNet-20 as student-train/src/models/resnet.rs: 3x3 stem of 16, three stages of
    three basic blocks at 16/32/64, BatchNorm, 1x1 conv + BatchNorm shortcuts where the shape
    changes, global average pool, linear head."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.short is None else self.short(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            blocks, cin = [], 16
            for stage in range(3):
                cout = 16 << stage
                for b in range(3):
                    blocks.append(Block(cin, cout, 2 if stage > 0 and b == 0 else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(cin, classes)

        def forward(self, x):
            x = self.blocks(torch.relu(self.bn(self.stem(x))))
            return self.head(x.mean((2, 3)))

    return Net()


def pytorch_train(torch, device, images_u8, batch, warmup, iters, cudnn_tf32):
    """resnet20, loss 0.1·CE(mixed hard labels) + 0.9·τ²·KL(p_t^τ ‖ p_s^τ) at τ = 4, SGD momentum
    0.9, weight decay 5e-4, fp32, cudnn.benchmark; batches already on the device."""
    F = torch.nn.functional
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default
    torch.backends.cudnn.allow_tf32 = cudnn_tf32  # PyTorch's default is True
    torch.manual_seed(0)
    net = resnet20(torch).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    pool = 8
    n = min(len(images_u8), pool * batch)
    reps = -(-pool * batch // n)
    x_all = torch.from_numpy(np.concatenate([images_u8[:n]] * reps)[: pool * batch])
    x_all = x_all.to(device).permute(0, 3, 1, 2).contiguous().float().div_(255).sub_(0.5).div_(0.5)
    g = torch.Generator(device="cpu").manual_seed(1)
    t_logits = (torch.randn(pool * batch, 10, generator=g) * 3).to(device)
    y1 = torch.randint(0, 10, (pool * batch,), generator=g).to(device)
    y2 = torch.randint(0, 10, (pool * batch,), generator=g).to(device)
    lam = torch.rand(pool * batch, generator=g).to(device)
    tau, w = 4.0, 0.9
    p_t = F.softmax(t_logits / tau, dim=1)

    def step(i):
        s = slice((i % pool) * batch, (i % pool + 1) * batch)
        out = net(x_all[s])
        logp = F.log_softmax(out, dim=1)
        ce = -(lam[s] * logp.gather(1, y1[s, None])[:, 0]
               + (1 - lam[s]) * logp.gather(1, y2[s, None])[:, 0]).mean()
        kl = F.kl_div(F.log_softmax(out / tau, dim=1), p_t[s], reduction="batchmean")
        loss = (1 - w) * ce + w * tau * tau * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for i in range(warmup):
        step(i)
    sync(torch, device)
    t0 = time.perf_counter()
    for i in range(iters):
        loss = step(i)
    sync(torch, device)
    secs = time.perf_counter() - t0
    if not math.isfinite(float(loss)):
        raise Skip("non-finite loss")
    return batch * iters / secs


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distill", required=True, help="the distill binary (a --features tch build for GPU training)")
    ap.add_argument("--ort-lib", default=os.environ.get("ORT_DYLIB_PATH"), help="ONNX Runtime library (default: $ORT_DYLIB_PATH)")
    ap.add_argument("--work", default=None, help="work directory (default: /tmp/distill-gpu-bench, or -smoke)")
    ap.add_argument("--images", type=int, default=None, help="JPEGs to generate (default 4096; smoke 1000)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, CPU devices: checks the script end to end")
    ap.add_argument("--label-epochs", type=int, default=None, help="augmented epochs per `distill label` timing run (default 2; smoke 1)")
    ap.add_argument("--cifar-images", type=int, default=None, help="npy training images (default 25000; smoke 128)")
    ap.add_argument("--threads", type=int, default=None, help="loader threads / DataLoader workers (default: all cores)")
    ap.add_argument("--timeout", type=int, default=400, help="seconds allowed to each distill command")
    a = ap.parse_args()

    smoke = a.smoke
    ncores = a.threads or cores()
    n_images = a.images or (1000 if smoke else 4096)
    label_epochs = a.label_epochs or (1 if smoke else 2)
    n_cifar = a.cifar_images or (128 if smoke else 25000)
    work = Path(a.work or ("/tmp/distill-gpu-bench" + ("-smoke" if smoke else ""))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "distill.log").write_text("")
    dist = Distill(Path(a.distill).resolve(), a.ort_lib, work, a.timeout)
    res = Results()
    t_start = time.time()

    # Settings of the two modes.
    if smoke:
        jw, jh = 64, 48
        label_dev, label_size, label_batch = "cpu", 32, 64
        train_dev, train_batch, teacher_batch = "cpu", 32, 32
        pt_batch, pt_size, pt_warm, pt_iters = 8, 64, 1, 2
        pipe_batch, pipe_size, pipe_epochs = 32, 64, 1
        tr_warm, tr_iters = 1, 3
    else:
        jw, jh = 500, 375
        label_dev, label_size, label_batch = "cuda", 224, 256
        train_dev, train_batch, teacher_batch = "tch:cuda:0", 128, 128
        pt_batch, pt_size, pt_warm, pt_iters = 256, 224, 5, 20
        pipe_batch, pipe_size, pipe_epochs = 256, 224, 3
        tr_warm, tr_iters = 20, 200

    info = [f"mode: {'smoke' if smoke else 'full'}", f"cores: {ncores}"]
    try:
        p, _ = dist.run(["--version"])
        info.append(p.stdout.strip())
    except Skip as e:
        info.append(f"distill --version failed: {e}")
    if not a.ort_lib:
        log("warning: no --ort-lib and no ORT_DYLIB_PATH: distill searches for ONNX Runtime itself"
            " (a pip onnxruntime of python3 comes before .ort/; it may lack the CUDA EP)")
    info.append(f"ort: {a.ort_lib or 'searched by distill'}")

    # a. JPEGs
    jroot = work / "jpeg"

    def gen():
        secs = make_jpegs(jroot, n_images, jw, jh, ncores)
        return n_images / secs, f"{n_images} JPEGs {jw}×{jh} in {CLASSES} class folders, {secs:.1f}s"

    res.step("gen", "a. JPEG generation (PIL, all cores)", gen)
    have_jpegs = (jroot / f"done-{n_images}-{jw}x{jh}").exists()

    torch = torch_or_none()
    device = None
    if torch is not None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        info.append(f"torch {torch.__version__}, device {device}"
                    + (f" ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else ""))
    else:
        info.append("torch: not importable")
    no_torch = "torch not importable by this python"
    no_cuda = "torch sees no CUDA device"

    # b. teachers
    t32, t16 = work / "teacher-fp32.onnx", work / "teacher-fp16.onnx"
    teacher_kind = None
    model = None
    if not smoke:
        def export():
            if torch is None:
                raise Skip(no_torch + ": no resnet50 teacher")
            nonlocal model, teacher_kind
            model = resnet50(torch, device, 224)
            secs = export_resnet50(torch, model, t32, t16, device, 224)
            teacher_kind = "resnet50"
            return secs, f"{t32.stat().st_size / 2**20:.0f} MiB fp32, {t16.stat().st_size / 2**20:.0f} MiB fp16"
        res.step("export", "b. resnet50 → ONNX opset 17, fp32 + fp16 (export time)", export, unit="s")
    else:
        def tiny():
            nonlocal teacher_kind, model
            t0 = time.time()
            r50 = ""
            if torch is not None:  # the smoke run still exercises the resnet50 export
                try:
                    model = resnet50(torch, device, 64)
                    export_resnet50(torch, model, work / "r50-fp32.onnx", work / "r50-fp16.onnx", device, 64)
                    r50 = "; resnet50 export exercised"
                except Exception as e:
                    traceback.print_exc(file=sys.stderr)
                    r50 = f"; resnet50 export FAILED: {type(e).__name__}: {e}".splitlines()[0][:200]
            try:
                tiny_teacher(t32, label_size, fp16=False)
                tiny_teacher(t16, label_size, fp16=True)
            except ImportError:
                raise Skip("neither torch nor the onnx package is importable: no teacher")
            teacher_kind = "tiny"
            return time.time() - t0, f"tiny Flatten+Gemm teachers over 3×{label_size}×{label_size}{r50}"
        res.step("export", "b. teachers (smoke: tiny ONNX)", tiny, unit="s")

    # c. distill label over the JPEG folder
    def label(onnx_path, name, dev):
        def run():
            if teacher_kind is None:
                raise Skip("no teacher (step b)")
            if not have_jpegs:
                raise Skip("no JPEG folder (step a)")
            # --prefer-nhwc and --tf32 only matter on CUDA; the CPU takes and ignores them
            p, secs = dist.run(
                ["label", "--teacher", onnx_path, "--data", jroot, "--out", work / "stores" / name,
                 "--force", "--device", dev, "--prefer-nhwc", "--tf32", "true", "--aug", "usi", "--topk", "10",
                 "--epochs", label_epochs, "--size", label_size, "--batch", label_batch,
                 "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                 "--threads", ncores, "--json", *dist.label_args()])
            s = parse_json(p.stdout)
            return s["images_per_sec"], (
                f"{s['records']} records ({label_epochs} epoch(s) × {n_images}), {s['seconds']:.1f}s"
                " incl. session start")
        return run

    # the same stage on pre-decoded, pre-sized u8 pixels without augmentation: no JPEG decoding,
    # no resize, no mixing; what is left is reading, normalizing, the session and the writer
    rawdir = work / f"npy{label_size}"

    def label_raw(onnx_path, name, dev):
        def run():
            if teacher_kind is None:
                raise Skip("no teacher (step b)")
            make_npy(rawdir, n_images, label_size, CLASSES)
            p, secs = dist.run(
                ["label", "--teacher", onnx_path, "--data", rawdir, "--out", work / "stores" / name,
                 "--force", "--device", dev, "--prefer-nhwc", "--tf32", "true", "--aug", "none",
                 "--topk", "10", "--epochs", label_epochs, "--size", label_size, "--batch", label_batch,
                 "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                 "--threads", ncores, "--json", *dist.label_args()])
            s = parse_json(p.stdout)
            return s["images_per_sec"], (
                f"{s['records']} records of {label_size}×{label_size} u8 npy, --aug none, "
                f"{s['seconds']:.1f}s incl. session start")
        return run

    tk = "resnet50" if teacher_kind == "resnet50" else "tiny"
    if smoke:
        res.step("label_cpu_fp32", f"c. distill label --device cpu, fp32 {tk} teacher, usi", label(t32, "cpu-fp32", "cpu"))
        res.step("label_cpu_fp16", f"c. distill label --device cpu, fp16 {tk} teacher, usi", label(t16, "cpu-fp16", "cpu"))
        # the CUDA command line too: here it runs, or shows how a missing GPU reads in the table
        res.step("label_smoke_cuda", f"c. distill label --device cuda, fp16 {tk} teacher, usi", label(t16, "cuda-fp16", "cuda"))
        res.step("label_cpu_fp32_raw", f"c. distill label --device cpu, fp32 {tk} teacher, npy, no aug", label_raw(t32, "cpu-fp32-raw", "cpu"))
    else:
        res.step("label_fp32", "c. distill label --device cuda, fp32 resnet50, TF32, NHWC, usi", label(t32, "cuda-fp32", "cuda"))
        res.step("label_fp16", "c. distill label --device cuda, fp16 resnet50, NHWC, usi", label(t16, "cuda-fp16", "cuda"))
        res.step("label_fp32_raw", "c. same, fp32, 224×224 npy input, no aug (no decode)", label_raw(t32, "cuda-fp32-raw", "cuda"))
        res.step("label_fp16_raw", "c. same, fp16, 224×224 npy input, no aug (no decode)", label_raw(t16, "cuda-fp16-raw", "cuda"))

    # d. PyTorch eager inference
    def need_resnet50():
        """Skips a PyTorch row that has no torch, no GPU (outside smoke mode) or no model."""
        if torch is None:
            raise Skip(no_torch)
        if device.type != "cuda" and not smoke:
            raise Skip(no_cuda)
        if model is None:
            raise Skip("no resnet50 (step b)")

    def eager(mode):
        def run():
            need_resnet50()
            return eager_inference(torch, model, device, mode, pt_batch, pt_size, pt_warm, pt_iters), (
                f"batch {pt_batch}, {pt_size}px, device-resident, {pt_iters} timed runs")
        return run

    res.step("pt_fp32", "d. PyTorch eager resnet50 fp32 (TF32 off)", eager("fp32"))
    res.step("pt_tf32", "d. PyTorch eager resnet50 TF32", eager("tf32"))
    res.step("pt_fp16", "d. PyTorch eager resnet50 fp16 channels_last", eager("fp16"))
    res.step("pt_bf16", "d. PyTorch eager resnet50 bf16 autocast channels_last", eager("bf16"))

    # e. the PyTorch pipeline
    def pipeline():
        need_resnet50()
        if not have_jpegs:
            raise Skip("no JPEG folder (step a)")
        half = device.type == "cuda"
        workers = ncores if not smoke else min(2, ncores)
        v = pytorch_pipeline(torch, model, device, jroot / "train", pipe_batch, pipe_size, workers, pipe_epochs, half)
        timed = f"epochs 2..{pipe_epochs} timed" if pipe_epochs > 1 else "one epoch"
        return v, (f"{workers} workers, batch {pipe_batch}, {'fp16' if half else 'fp32'} "
                   f"channels_last, {timed}")
    res.step("pt_pipeline", "e. PyTorch pipeline: DataLoader+PIL, RRC+flip, GPU mixup/cutmix, fp16 CL, top-10 to CPU", pipeline)

    # f. training
    cdir = work / "cifar"
    r20 = work / "teacher-resnet20.onnx"
    store = work / "stores" / "cifar"
    state = {}

    def prepare():
        make_cifar_like(cdir, n_cifar)
        run_t = work / "runs" / "teacher"
        shutil.rmtree(run_t, ignore_errors=True)
        dist.run(["train", "--data", cdir, "--model", "resnet20", "--loss", "ce", "--epochs", 1,
                  "--batch", teacher_batch, "--device", train_dev, "--threads", ncores,
                  "--test-split", "none", "--out", run_t, "--json"])
        teacher_run = sorted(run_t.rglob("student.ckpt"))[0].parent
        dist.run(["export", teacher_run, "--onnx", r20])
        ldev = "cuda" if label_dev.startswith("cuda") else "cpu"
        p, _ = dist.run(["label", "--teacher", r20, "--data", cdir, "--out", store, "--force",
                         "--epochs", 2, "--aug", "usi", "--topk", 10, "--batch", 1024,
                         "--device", ldev, "--threads", ncores, "--json", *dist.label_args()])
        s = parse_json(p.stdout)
        state["store"] = True
        return s["images_per_sec"], f"{n_cifar} npy images 32×32, resnet20 ce teacher (1 epoch), {s['records']} records"

    res.step("cifar_label", f"f. distill label --device {'cuda' if not smoke else 'cpu'}, resnet20 teacher, 32×32 npy, usi", prepare)

    def distill_train(i, out, threads, dev=train_dev):
        return ["train", "--data", cdir, "--labels", store, "--model", "resnet20", "--loss", "kd",
                "--epochs", 2, "--batch", train_batch, "--device", dev, "--threads", threads,
                "--seed", i, "--test-split", "none", "--out", out, "--json"]

    def train_1(dev=train_dev, name="kd"):
        def run():
            if not state.get("store"):
                raise Skip("no store (row above)")
            out = work / "runs" / name
            shutil.rmtree(out, ignore_errors=True)
            dist.run(distill_train(0, out, ncores, dev))
            m = last_metrics(out)
            return m["images_per_sec"], (
                f"epoch 2 of 2, batch {train_batch}, loader wait {100 * m['loader_wait_fraction']:.1f}%")
        return run

    res.step("train_1", f"f. distill train --device {train_dev} resnet20 kd", train_1())
    if smoke:  # the GPU command line too (needs a --features tch binary and a GPU)
        res.step("train_smoke_tch", "f. distill train --device tch:cuda:0 resnet20 kd", train_1("tch:cuda:0", "kd-tch"))

    def train_4():
        if not state.get("store"):
            raise Skip("no store (row above)")
        procs = []
        t0 = time.time()
        for i in range(4):
            out = work / "runs" / f"kd-par{i}"
            shutil.rmtree(out, ignore_errors=True)
            procs.append((out, *dist.popen(distill_train(i, out, max(1, ncores // 4)), work / f"kd-par{i}.log")))
        fails = []
        for out, p, f in procs:
            try:
                rc = p.wait(timeout=max(1, a.timeout - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                p.kill()
                rc = "timeout"
            f.close()
            if rc != 0:
                fails.append(f"{out.name}: rc {rc}: {last_line((work / f'{out.name}.log').read_text())}")
        if fails:
            raise Skip("; ".join(fails))
        wall = time.time() - t0
        ms = [last_metrics(out) for out, _, _ in procs]
        total = sum(m["images_per_sec"] for m in ms)
        waits = ", ".join(f"{100 * m['loader_wait_fraction']:.0f}%" for m in ms)
        return total, (f"sum of the 4 epoch-2 rates, {max(1, ncores // 4)} loader thread(s) each; "
                       f"loader wait {waits}; {4 * 2 * n_cifar / wall:,.0f} images/s over {wall:.0f}s wall incl. start")

    res.step("train_4", f"f. 4 × distill train --device {train_dev} at once, one store", train_4)

    def pt_train(tf32):
        def run():
            if torch is None:
                raise Skip(no_torch)
            if device.type != "cuda" and not smoke:
                raise Skip(no_cuda)
            make_cifar_like(cdir, n_cifar)
            imgs = np.load(cdir / "train_images.npy", mmap_mode="r")
            v = pytorch_train(torch, device, np.asarray(imgs[: 8 * train_batch]), train_batch, tr_warm, tr_iters, tf32)
            return v, f"batch {train_batch}, device-resident batches, {tr_iters} timed steps"
        return run

    res.step("pt_train_fp32", "f. PyTorch eager resnet20 kd, SGD, fp32 (TF32 off), cudnn.benchmark", pt_train(False))
    res.step("pt_train_default", "f. PyTorch eager resnet20 kd, SGD, default (cuDNN TF32 on)", pt_train(True))

    # g. the table
    info.append(f"total {time.time() - t_start:.0f}s")
    md = "\n".join([
        f"distill GPU benchmark ({'; '.join(info)})",
        "",
        table(res),
        "",
    ])
    (work / "table.md").write_text(md)
    (work / "results.json").write_text(json.dumps({"info": info, "rows": res.rows}, indent=2))
    log(f"\nwork directory: {work} (distill.log has every distill command and its output)\n")
    print(md, flush=True)


if __name__ == "__main__":
    main()
