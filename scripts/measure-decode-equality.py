"""How far distill's decoder is from Pillow's (what torchvision's ImageFolder and timm decode with:
`Image.open(f).convert("RGB")`), per file kind: the share of equal bytes and the largest
difference. JPEGs of each chroma mode, progressive, with restart markers, grayscale and CMYK; PNGs
of each mode Pillow converts (palette, LA, RGBA, 16-bit). Photo-like 500x375 content.

Usage: .venv-py/bin/python scripts/measure-decode-equality.py   (after `maturin develop`)
Prints a markdown table; exits 0 whatever it finds (it measures, it does not test).
"""

import io

import numpy as np
from PIL import Image

import distill


def photo(rng, w=500, h=375):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [127 + 90 * np.sin(x * 0.02 + c) * np.cos(y * 0.015 - c) + rng.normal(0, 14, (h, w))
             for c in range(4)]
    edges = np.where((x // 60 + y // 45) % 2 == 0, 30, -30)
    return np.clip(np.stack(chans, -1) + edges[..., None], 0, 255).astype(np.uint8)


def encoded(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def cases(rng):
    a = photo(rng)
    rgb, rgba = Image.fromarray(a[..., :3]), Image.fromarray(a)
    gray = rgb.convert("L")
    yield "JPEG 4:4:4", encoded(rgb, "JPEG", quality=90, subsampling=0)
    yield "JPEG 4:2:2", encoded(rgb, "JPEG", quality=90, subsampling=1)
    yield "JPEG 4:2:0", encoded(rgb, "JPEG", quality=90, subsampling=2)
    yield "JPEG 4:2:0 q75", encoded(rgb, "JPEG", quality=75)
    yield "JPEG progressive 4:2:0", encoded(rgb, "JPEG", quality=90, progressive=True)
    try:
        yield "JPEG restart markers", encoded(rgb, "JPEG", quality=90, restart_marker_rows=1)
    except (TypeError, ValueError, OSError):
        pass
    yield "JPEG grayscale", encoded(gray, "JPEG", quality=90)
    yield "JPEG CMYK", encoded(rgb.convert("CMYK"), "JPEG", quality=90)
    yield "PNG RGB", encoded(rgb, "PNG")
    yield "PNG L", encoded(gray, "PNG")
    yield "PNG LA", encoded(rgba.convert("LA"), "PNG")
    yield "PNG RGBA", encoded(rgba, "PNG")
    yield "PNG P (palette)", encoded(rgb.quantize(200), "PNG")
    p = rgb.quantize(64)
    yield "PNG P + transparency", encoded(p, "PNG", transparency=3)
    g16 = np.asarray(gray).astype(np.uint16) * 257
    yield "PNG 16-bit gray", encoded(Image.fromarray(g16), "PNG")


def main():
    rng = np.random.default_rng(0)
    print("| file | equal bytes | max diff |")
    print("|---|---:|---:|")
    for name, data in cases(rng):
        want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        try:
            got = distill.decode_image(data)
        except ValueError as e:
            print(f"| {name} | refused: {e} | |")
            continue
        if got.shape != want.shape:
            print(f"| {name} | shape {got.shape} vs {want.shape} | |")
            continue
        d = np.abs(got.astype(int) - want.astype(int))
        print(f"| {name} | {100 * np.mean(d == 0):.2f}% | {d.max()} |")


if __name__ == "__main__":
    main()
