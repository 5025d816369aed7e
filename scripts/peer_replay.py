"""The replaying loader a PyTorch user writes without distill's module, for
`scripts/bench-python-loader.sh` (issue 14): the pure-Python store reader (`python/distill_store.py`)
for the records, and a torch-style map dataset in a worker pool (as `DataLoader(num_workers=W)`
runs it) that replays each record's stored augmentation with PIL and numpy: open the JPEG, crop
the stored box and resize it bilinearly to 224 in one PIL call, flip, the same for the mix
partner (mixup blend or cutmix paste), cutout, normalize; batches of 128 collated in the main
process with the mixed hard labels and the teacher distribution at τ = 1 from the reader's
arrays. Every record decodes its own image and its partner's (what such a dataset does).

Usage: peer_replay.py STORE FOLDER EPOCH [WORKERS]; prints one JSON line.
"""

import json
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import distill_store  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
STATE = {}


def view(path, crop, flip, size):
    """The stored crop of `path` resized to `size` (w, h), flipped when stored so; u8 HWC."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        box = None if crop is None else (crop["x"], crop["y"], crop["x"] + crop["w"],
                                         crop["y"] + crop["h"])
        im = im.resize(size, Image.BILINEAR, box=box)
        if flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(im, dtype=np.uint8)


def init(files, labels, aug_bytes, size, classes):
    STATE.update(files=files, labels=labels, aug=aug_bytes, size=size, classes=classes)


def item(i):
    """One record: (normalized CHW float32 input, mixed hard label, sample)."""
    s = STATE
    aug = distill_store._aug_dict(s["aug"][i].tobytes())
    w, h = s["size"]
    x = view(s["files"][i], aug["crop"], aug["flip"], (w, h)).astype(np.float32)
    hard = np.zeros(s["classes"], np.float32)
    lam = 1.0
    mix = aug.get("mix")
    if mix:
        j = mix["partner"]
        p = view(s["files"][j], mix["partner_crop"], mix["partner_flip"], (w, h))
        kind = mix["kind"]
        if kind["kind"] == "mixup":
            lam = kind["lambda_q"] / 65535.0
            x = x * lam + p.astype(np.float32) * (1.0 - lam)
        else:
            r = kind["region"]
            x[r["y"]:r["y"] + r["h"], r["x"]:r["x"] + r["w"]] = \
                p[r["y"]:r["y"] + r["h"], r["x"]:r["x"] + r["w"]]
            lam = 1.0 - r["w"] * r["h"] / (w * h)
        hard[s["labels"][j]] += 1.0 - lam
    hard[s["labels"][i]] += lam
    c = aug.get("cutout")
    if c:
        x[c["y"]:c["y"] + c["h"], c["x"]:c["x"] + c["w"]] = 0.0
    x = (x.transpose(2, 0, 1) / 255.0 - MEAN) / STD
    return x.astype(np.float32), hard, i


def main():
    store_dir, folder, epoch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    root = os.path.join(folder, "train")
    files, labels = [], []
    classes = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    for c, name in enumerate(classes):
        d = os.path.join(root, name)
        for f in sorted(os.listdir(d)):
            files.append(os.path.join(d, f))
            labels.append(c)
    t0 = time.perf_counter()
    store = distill_store.open_store(store_dir)
    arrays = store.epoch_arrays(epoch % store.epochs)
    teacher = arrays.probs(1.0)
    size = (224, 224)
    order = np.random.default_rng(epoch).permutation(len(files))
    n = 0
    batch = []
    with Pool(workers, init, (files, labels, arrays.aug_bytes, size, store.classes)) as pool:
        def collate(batch):
            x = np.stack([b[0] for b in batch])
            hard = np.stack([b[1] for b in batch])
            t = teacher[[b[2] for b in batch]]
            return x, hard, t

        for r in pool.imap(item, order.tolist(), chunksize=8):
            batch.append(r)
            if len(batch) == 128:
                n += len(collate(batch)[0])
                batch = []
        if batch:
            n += len(collate(batch)[0])
    seconds = time.perf_counter() - t0
    print(json.dumps({"stream": f"pure-Python reader + PIL/numpy replay, {workers} workers",
                      "records": n, "seconds": seconds, "records_per_sec": n / seconds}))


if __name__ == "__main__":
    main()
