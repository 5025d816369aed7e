"""Resize speed per image: Pillow (what torchvision and timm run) against distill's resampler on
the same views of the same pixels, one thread each, in one process.

Views: `light`-style random-resized crops (scale 0.08-1, ratio 3/4-4/3) to 224x224 and the
224 centre crop (Resize(256) + CenterCrop(224)), of 500x375 photos and of 12-megapixel ones;
bilinear and bicubic. Pillow: `img.crop(box).resize((224, 224), f)` (torchvision's
RandomResizedCrop on PIL), and `img.resize((rw, rh), f).crop(...)` for the centre (its
Resize + CenterCrop). distill: `distill.resized_crop` / `distill.center_crop`, which also copy
the numpy pixels in and the result out (counted against distill). Outputs are checked equal.

Usage: .venv-py/bin/python scripts/bench-resize.py [ROUNDS]   (after `maturin develop --release`)
"""

import math
import sys
import time

import numpy as np
from PIL import Image

import distill

FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def photo(rng, w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [127 + 100 * np.sin(x * rng.uniform(0.002, 0.05) + c) * np.cos(y * 0.01 - c)
             + rng.normal(0, 12, (h, w)) for c in range(3)]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def light_box(rng, w, h):
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    return 0, 0, w, h


def pil_center(im, f):
    w, h = im.size
    s = 256
    short, long = (w, h) if w <= h else (h, w)
    nl = int(s * long / short)
    nw, nh = (s, nl) if w <= h else (nl, s)
    im = im.resize((nw, nh), f)
    top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
    return im.crop((left, top, left + 224, top + 224))


def timed(fn, items):
    t = time.perf_counter()
    out = [fn(i) for i in items]
    return len(items) / (time.perf_counter() - t), out


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rng = np.random.default_rng(0)
    sets = {"500x375": [photo(rng, 500, 375) for _ in range(8)],
            "4000x3000": [photo(rng, 4000, 3000) for _ in range(2)]}
    print("| views | filter | Pillow views/s | distill views/s | distill / Pillow |")
    print("|---|---|---|---|---|")
    for name, arrays in sets.items():
        pils = [Image.fromarray(a) for a in arrays]
        n = 200 if name == "500x375" else 12
        boxes = [(i % len(arrays), light_box(rng, *pils[i % len(arrays)].size)) for i in range(n)]
        for view in ["light crops", "centre 224/0.875"]:
            for fname, f in FILTERS.items():
                if view == "light crops":
                    def p(item):
                        i, (x, y, w, h) = item
                        return np.asarray(pils[i].crop((x, y, x + w, y + h)).resize((224, 224), f))

                    def d(item):
                        i, b = item
                        return distill.resized_crop(arrays[i], b, (224, 224), fname)
                    items = boxes
                else:
                    def p(i):
                        return np.asarray(pil_center(pils[i], f))

                    def d(i):
                        return distill.center_crop(arrays[i], (224, 224), 0.875, fname)
                    items = [i % len(arrays) for i in range(n)]
                ps, ds = [], []
                for _ in range(rounds):
                    rp, outp = timed(p, items)
                    rd, outd = timed(d, items)
                    ps.append(rp)
                    ds.append(rd)
                assert all(np.array_equal(a, b) for a, b in zip(outp, outd)), "outputs differ"
                mp, md = float(np.median(ps)), float(np.median(ds))
                print(f"| {name}, {view} | {fname} | {mp:.0f} | {md:.0f} | {md / mp:.2f}x |")


if __name__ == "__main__":
    main()
