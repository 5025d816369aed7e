"""Decoding speed per image: Pillow (`Image.open(f).convert("RGB")`, what torchvision's
ImageFolder and timm run) against distill's decoder (`distill.decode_image`: libjpeg-turbo, the
same library Pillow bundles), one thread each, in one process; then the whole eval transform of
one image (decode, `Resize(256)` + `CenterCrop(224)`, bicubic) and a random-resized crop to 224
the same way. Outputs are checked equal. distill's figures include copying the pixels out to
numpy (and back in for the resize), so they are counted against distill.

JPEGs: the bench folder's 500x375 files (`scripts/make-bench-jpegs.sh`, first 400) and six
12-megapixel photo-like JPEGs made here (4000x3000, quality 90, 4:2:0).

Usage: .venv-py/bin/python scripts/bench-decode.py [FOLDER] [ROUNDS]
       (after `maturin develop --release`; FOLDER defaults to target/bench-jpegs)
"""

import io
import math
import pathlib
import sys
import time

import numpy as np
from PIL import Image

import distill

BICUBIC = Image.Resampling.BICUBIC


def photo(rng, w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [127 + 100 * np.sin(x * rng.uniform(0.002, 0.05) + c) * np.cos(y * 0.01 - c)
             + rng.normal(0, 12, (h, w)) for c in range(3)]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def pil_center(im):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    nl = int(256 * long / short)
    nw, nh = (256, nl) if w <= h else (nl, 256)
    im = im.resize((nw, nh), BICUBIC)
    top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
    return im.crop((left, top, left + 224, top + 224))


def light_box(rng, w, h):
    for _ in range(10):
        target = w * h * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    return 0, 0, w, h


def rate(fn, items, rounds):
    best, out = 0.0, None
    for _ in range(rounds):
        t = time.perf_counter()
        out = [fn(i) for i in items]
        best = max(best, len(items) / (time.perf_counter() - t))
    return best, out


def main():
    folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-jpegs")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rng = np.random.default_rng(0)
    small = [p.read_bytes() for p in sorted(folder.glob("train/*/*.jpg"))[:400]]
    if not small:
        sys.exit(f"no JPEGs under {folder}/train: run scripts/make-bench-jpegs.sh")
    big = []
    for _ in range(6):
        b = io.BytesIO()
        Image.fromarray(photo(rng, 4000, 3000)).save(b, "JPEG", quality=90)
        big.append(b.getvalue())
    print("| JPEGs | work | Pillow images/s | distill images/s | distill / Pillow |")
    print("|---|---|---:|---:|---:|")
    for name, files in [("500x375", small), ("4000x3000", big)]:
        boxes = [light_box(rng, *Image.open(io.BytesIO(f)).size) for f in files]
        items = list(zip(files, boxes))

        def p_decode(item):
            return np.asarray(Image.open(io.BytesIO(item[0])).convert("RGB"))

        def d_decode(item):
            return distill.decode_image(item[0])

        def p_center(item):
            return np.asarray(pil_center(Image.open(io.BytesIO(item[0])).convert("RGB")))

        def d_center(item):
            return distill.center_crop(distill.decode_image(item[0]), (224, 224), 0.875,
                                       "bicubic")

        def p_crop(item):
            x, y, w, h = item[1]
            im = Image.open(io.BytesIO(item[0])).convert("RGB")
            return np.asarray(im.crop((x, y, x + w, y + h)).resize((224, 224), BICUBIC))

        def d_crop(item):
            return distill.resized_crop(distill.decode_image(item[0]), item[1], (224, 224),
                                        "bicubic")

        for work, p, d in [("decode", p_decode, d_decode),
                           ("decode + centre 224 (bicubic)", p_center, d_center),
                           ("decode + random-resized crop 224 (bicubic)", p_crop, d_crop)]:
            pr, pout = rate(p, items, rounds)
            dr, dout = rate(d, items, rounds)
            same = all(np.array_equal(a, b) for a, b in zip(pout, dout))
            assert same, f"{name} {work}: distill's pixels differ from Pillow's"
            print(f"| {name} | {work} | {pr:.0f} | {dr:.0f} | {dr / pr:.2f}x |")


if __name__ == "__main__":
    main()
