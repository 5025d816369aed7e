"""The labelling a PyTorch user writes today, for `scripts/bench-label-images.sh` (issue 13).

What FKD's and most hand-written offline-KD scripts do, without torch (whose wheel is gigabytes):
a shuffled ImageFolder, a worker pool that opens each JPEG with PIL, takes torchvision's
RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, bilinear to 224) and a horizontal flip, batches of
64 normalized in the main process, timm's in-batch Mixup/CutMix (mixup alpha 0.8, cutmix alpha
1.0, switch 0.5, every batch mixed with its reverse), onnxruntime on the batch, top-10 of the
logits kept. Every record decodes its own image once (partners come from the same batch).

Usage: peer_label.py FOLDER/train TEACHER.onnx EPOCHS [WORKERS]; prints one JSON line per run.
"""

import json
import math
import os
import random
import sys
import time
from multiprocessing import Pool

import numpy as np
import onnxruntime as ort
from PIL import Image

SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def rrc_params(rng, w, h, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params."""
    area = w * h
    lr = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(*lr))
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        cw, ch = int(round(h * ratio[1])), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def load(item):
    """One worker sample: decode, random-resized crop, flip; u8 HWC."""
    path, seed = item
    rng = random.Random(seed)
    with Image.open(path) as im:
        im = im.convert("RGB")
        x, y, cw, ch = rrc_params(rng, *im.size)
        # torchvision's F.resized_crop on PIL: crop, then resize (taps stop at the box edge).
        im = im.crop((x, y, x + cw, y + ch)).resize((SIZE, SIZE), Image.BILINEAR)
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(im, dtype=np.uint8)


def mix(x, rng):
    """timm's Mixup in batch mode: the batch mixed with its reverse."""
    if rng.random() < 0.5:
        lam = rng.beta(1.0, 1.0)
        cut = math.sqrt(1 - lam)
        ch, cw = int(SIZE * cut), int(SIZE * cut)
        cy, cx = rng.integers(SIZE), rng.integers(SIZE)
        y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, SIZE)
        x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, SIZE)
        x[:, :, y0:y1, x0:x1] = x[::-1, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (SIZE * SIZE)
    else:
        lam = rng.beta(0.8, 0.8)
        x = x * lam + x[::-1] * (1 - lam)
    return x, lam


def main():
    root, teacher, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    files = []
    for c in sorted(os.listdir(root)):
        d = os.path.join(root, c)
        if os.path.isdir(d):
            files += [os.path.join(d, f) for f in sorted(os.listdir(d))]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(teacher, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    kept = []
    t0 = time.perf_counter()
    with Pool(workers) as pool:
        for e in range(epochs):
            order = rng.permutation(len(files))
            items = [(files[i], e * len(files) + int(i)) for i in order]
            batch = []

            def run(batch):
                x = np.stack(batch).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
                x = (x - MEAN) / STD
                x, lam = mix(x, rng)
                logits = sess.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]
                top = np.argpartition(-logits, 10 - 1, axis=1)[:, :10]
                kept.append((top.astype(np.uint16), np.take_along_axis(logits, top, 1), lam))

            for img in pool.imap(load, items, chunksize=16):
                batch.append(img)
                if len(batch) == 64:
                    run(batch)
                    batch = []
            if batch:
                run(batch)
    seconds = time.perf_counter() - t0
    records = epochs * len(files)
    print(json.dumps({
        "tool": "peer", "path": "pil-pool-onnxruntime", "epochs": epochs, "samples": len(files),
        "records": records, "seconds": seconds, "records_per_sec": records / seconds,
        "images_decoded": records,
    }))


if __name__ == "__main__":
    main()
