"""The acceptance measurement of faithful pixels: a real ImageNet teacher on real photos, labelled
by `distill label --aug center` and run through the eval transform timm and torchvision use
(PIL decode, `convert("RGB")`, `Resize(floor(size / crop_pct))`, `CenterCrop(size)`, the same
interpolation), compared per photo: top-1 agreement, mean KL(reference ‖ stored), and whether the
pixels distill replays equal the transform's. Grouped by how far the photo's shorter side is
from the resize target.

The photos go into one tar shard (`NNNNN.jpg|png` and a dummy `NNNNN.cls`, read with
`--classes` = the teacher's class count: an image folder's classes would have to be the
teacher's). Stores are written with `--codec f16 --topk C`, so the stored distribution is the
teacher's up to f16 rounding.

Usage (a venv with onnxruntime, numpy, Pillow 13.0.0 and the `distill` module):
  PY scripts/measure-teacher-agreement.py --teacher T.onnx --photos DIR --distill BIN \
     --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --interpolation bicubic [--crop-pct 0.875]
     [--size 224] [--work DIR]
Prints a markdown table; the assets (model, photos) are the user's and never committed.
"""

import argparse
import io
import math
import pathlib
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import onnxruntime as ort
from PIL import Image

import distill

FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def eval_transform(path, size, crop_pct, f):
    """torchvision's Resize(int(size / crop_pct)) + CenterCrop(size) on PIL, as timm builds it."""
    im = Image.open(path).convert("RGB")
    s = math.floor(size / crop_pct)
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    if short != s:
        nl = int(s * long / short)
        nw, nh = (s, nl) if w <= h else (nl, s)
        im = im.resize((nw, nh), f)
    w, h = im.size
    if size > w or size > h:  # torchvision pads with zeros first
        pw, ph = max(size, w), max(size, h)
        padded = Image.new("RGB", (pw, ph))
        padded.paste(im, ((pw - w) // 2, (ph - h) // 2))
        im, (w, h) = padded, (pw, ph)
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)))


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--distill", required=True)
    ap.add_argument("--mean", required=True)
    ap.add_argument("--std", required=True)
    ap.add_argument("--interpolation", choices=sorted(FILTERS), required=True)
    ap.add_argument("--crop-pct", type=float, default=0.875)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--work")
    a = ap.parse_args()
    mean = np.array([float(v) for v in a.mean.split(",")], np.float32)
    std = np.array([float(v) for v in a.std.split(",")], np.float32)
    photos = sorted(p for p in pathlib.Path(a.photos).iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    work = pathlib.Path(a.work or tempfile.mkdtemp(prefix="agreement-"))
    work.mkdir(parents=True, exist_ok=True)
    sess = ort.InferenceSession(a.teacher, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    classes = sess.get_outputs()[0].shape[-1]

    shard = work / "photos.tar"
    with tarfile.open(shard, "w") as t:
        for i, p in enumerate(photos):
            ext = "png" if p.suffix.lower() == ".png" else "jpg"
            for name, data in [(f"{i:05d}.{ext}", p.read_bytes()), (f"{i:05d}.cls", b"0")]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    store = work / f"store-{a.interpolation}"
    subprocess.run([a.distill, "label", "--teacher", a.teacher, "--data", str(shard),
                    "--classes", str(classes), "--split", "train", "--aug", "center",
                    "--crop-pct", str(a.crop_pct), "--interpolation", a.interpolation,
                    "--size", str(a.size), "--mean", a.mean, "--std", a.std,
                    "--topk", str(classes), "--codec", "f16", "--force", "--json",
                    "--out", str(store)], check=True, stdout=subprocess.DEVNULL)
    st = distill.Store(str(store))
    stored = st.probs(0, 0, len(photos), temperature=1.0)

    f = FILTERS[a.interpolation]
    groups = {}
    for i, p in enumerate(photos):
        px = eval_transform(p, a.size, a.crop_pct, f)
        x = ((px.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None]
        ref = softmax(sess.run(None, {inp: x})[0].astype(np.float64))[0]
        got = np.clip(stored[i].astype(np.float64), 1e-30, None)
        kl = float(np.sum(ref * (np.log(np.clip(ref, 1e-30, None)) - np.log(got))))
        same_px = np.array_equal(st.view(0, i, str(shard)), px)
        w, h = Image.open(p).size
        ratio = min(w, h) / math.floor(a.size / a.crop_pct)
        g = "< 2x" if ratio < 2 else ("2x to 4x" if ratio < 4 else ">= 4x")
        for key in (g, "all"):
            groups.setdefault(key, []).append((ref.argmax() == got.argmax(), kl, same_px))
    print(f"{len(photos)} photos, teacher {pathlib.Path(a.teacher).name} ({classes} classes), "
          f"{a.interpolation}, crop_pct {a.crop_pct}, size {a.size}")
    print("| shorter side / resize target | photos | top-1 agreement | mean KL | max KL | "
          "equal pixels |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in ["< 2x", "2x to 4x", ">= 4x", "all"]:
        if key not in groups:
            continue
        r = groups[key]
        agree = sum(x[0] for x in r) / len(r)
        kls = [x[1] for x in r]
        print(f"| {key} | {len(r)} | {100 * agree:.2f}% | {np.mean(kls):.2e} | {max(kls):.2e} | "
              f"{sum(x[2] for x in r)}/{len(r)} |")


if __name__ == "__main__":
    sys.exit(main())
