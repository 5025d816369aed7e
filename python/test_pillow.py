"""distill's decoding and resampling against Pillow (the pinned version in requirements-test.txt),
byte for byte.

What torchvision's PIL path and timm feed a teacher is Pillow's: `RandomResizedCrop` is
`img.crop(box).resize(size, filter)`, evaluation is `Resize(floor(size / crop_pct))` of the whole
image then `CenterCrop(size)`. `distill.resized_crop` and `distill.center_crop` run the code that
makes distill's teacher inputs and replays them; here they meet Pillow on generated images from
1x1 to 6000x4000 (grayscale, RGB, and RGB converted from RGBA and palette images, as
`convert("RGB")` does), crop boxes from 8x upscaling to 30x downscaling, both filters, flips, and
centre crops at several crop_pct. `distill.decode_image` meets `Image.open(f).convert("RGB")` on
JPEGs of each chroma mode, progressive, with restart markers, grayscale, CMYK and YCCK, odd sizes
and an EXIF orientation (ignored by both), and on PNGs of every bit depth and colour type
(palettes short and long, tRNS, 16-bit, interlaced). Every byte must be equal (FORMAT.md §4.1
and "Decoding" name no exception).

Usage: test_pillow.py (after `maturin develop`); prints one line per group and a closing count.
"""

import io
import math
import struct
import sys
import warnings
import zlib

import numpy as np
from PIL import Image

import distill

FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def photo_like(rng: np.random.Generator, w: int, h: int, channels: int) -> np.ndarray:
    """Smooth colour fields, edges and noise: what makes aliasing and ringing visible."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for c in range(channels):
        fx, fy = rng.uniform(0.001, 0.2, 2)
        field = 127 + 100 * np.sin(x * fx + c) * np.cos(y * fy - c)
        field += np.where((x // max(1, w // 7) + y // max(1, h // 5)) % 2 == 0, 40, -40)
        field += rng.normal(0, 12, (h, w))
        out.append(field)
    a = np.clip(np.stack(out, axis=-1), 0, 255).astype(np.uint8)
    return a[..., 0] if channels == 1 else a


def as_rgb(rng: np.random.Generator, w: int, h: int, mode: str) -> np.ndarray:
    """An image of `mode` converted as `Image.open(f).convert("RGB")` converts it."""
    if mode == "L":
        return photo_like(rng, w, h, 1)
    if mode == "RGB":
        return photo_like(rng, w, h, 3)
    if mode == "RGBA":
        im = Image.fromarray(photo_like(rng, w, h, 4), "RGBA")
    else:  # "P": an adaptive palette of an RGB image
        im = Image.fromarray(photo_like(rng, w, h, 3), "RGB").quantize(64)
    return np.asarray(im.convert("RGB"))


def pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a, "L" if a.ndim == 2 else "RGB")


class Tally:
    def __init__(self) -> None:
        self.cases = 0
        self.failed = []

    def check(self, got: np.ndarray, want: np.ndarray, what: str) -> None:
        self.cases += 1
        if got.shape != want.shape:
            self.failed.append(f"{what}: shape {got.shape} vs Pillow's {want.shape}")
        elif not np.array_equal(got, want):
            d = np.abs(got.astype(int) - want.astype(int))
            self.failed.append(
                f"{what}: {np.count_nonzero(d)} of {d.size} values differ, max {d.max()}"
            )


def random_boxes(rng, w, h, n):
    """Boxes and output sizes from 8x upscaling to 30x downscaling (where the image allows)."""
    for _ in range(n):
        bw = int(rng.integers(1, w + 1))
        bh = int(rng.integers(1, h + 1))
        x = int(rng.integers(0, w - bw + 1))
        y = int(rng.integers(0, h - bh + 1))
        factor = math.exp(rng.uniform(math.log(1 / 8), math.log(30)))
        ow = max(1, min(4000, round(bw / factor)))
        oh = max(1, min(4000, round(bh / factor * rng.uniform(0.8, 1.25))))
        yield (x, y, bw, bh), (ow, oh)


def resized_crops(t: Tally, rng) -> None:
    sizes = [(1, 1), (2, 3), (7, 5), (28, 28), (33, 100), (500, 375), (375, 500), (1023, 767)]
    n = 0
    for w, h in sizes:
        for mode in ["L", "RGB", "RGBA", "P"]:
            a = as_rgb(rng, w, h, mode)
            for box, size in random_boxes(rng, w, h, 6):
                for name, f in FILTERS.items():
                    flip = bool(rng.integers(0, 2))
                    x, y, bw, bh = box
                    want = pil(a).crop((x, y, x + bw, y + bh)).resize(size, f)
                    if flip:
                        want = want.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                    got = distill.resized_crop(a, box, size, name, flip)
                    t.check(got, np.asarray(want), f"{mode} {w}x{h} box {box} -> {size} {name}")
                    n += 1
    # Pillow 13 runs the vertical pass first when the height shrinks by more than twice what
    # the width does (h - H > 2 (w - W)): both sides of that line, and very tall images.
    for w, h, size in [(40, 90, (30, 70)), (40, 91, (30, 70)), (40, 89, (30, 70)),
                       (30, 50, (40, 49)), (3, 400, (5, 40)), (2, 1000, (2, 17)),
                       (4, 450, (9, 449)), (400, 300, (100, 299))]:
        a = photo_like(rng, w, h, 3)
        for name, f in FILTERS.items():
            want = pil(a).resize(size, f)
            t.check(distill.resized_crop(a, None, size, name), np.asarray(want), f"{w}x{h}->{size}")
            n += 1
    print(f"resized crops: {n} cases")


def torchvision_center(a: np.ndarray, size: int, crop_pct: float, f) -> np.ndarray:
    """timm's eval transform on PIL as torchvision computes it: Resize(floor(size / crop_pct))
    (shorter side to that, longer int(s * long / short)), then CenterCrop(size) with
    int(round((dim - size) / 2.0))."""
    im = pil(a)
    s = math.floor(size / crop_pct)
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = s, int(s * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), f)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)))


def centre_crops(t: Tally, rng) -> None:
    n = 0
    sizes = [(1, 1), (150, 100), (224, 224), (500, 375), (375, 500), (640, 427), (1200, 1600)]
    for w, h in sizes:
        for mode in ["L", "RGB", "P"]:
            a = as_rgb(rng, w, h, mode)
            for crop_pct in [0.875, 0.9, 0.95, 0.96, 1.0]:
                for name, f in FILTERS.items():
                    size = int(rng.choice([32, 224, 256, 288]))
                    want = torchvision_center(a, size, crop_pct, f)
                    got = distill.center_crop(a, (size, size), crop_pct, name)
                    t.check(got, want, f"center {mode} {w}x{h} {size}/{crop_pct} {name}")
                    n += 1
    print(f"centre crops: {n} cases")


def large(t: Tally, rng) -> None:
    """12- and 24-megapixel sources: the 20-30x shrinks of phone photos to 224 px."""
    n = 0
    for w, h in [(4000, 3000), (6000, 4000)]:
        a = photo_like(rng, w, h, 3)
        for name, f in FILTERS.items():
            t.check(
                distill.center_crop(a, (224, 224), 0.875, name),
                torchvision_center(a, 224, 0.875, f),
                f"center {w}x{h} {name}",
            )
            for box, size in random_boxes(rng, w, h, 2):
                x, y, bw, bh = box
                want = pil(a).crop((x, y, x + bw, y + bh)).resize(size, f)
                t.check(distill.resized_crop(a, box, size, name), np.asarray(want), f"{box}")
                n += 3
    print(f"large sources: {n} cases")


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def as_ycck(cmyk_jpeg: bytes) -> bytes:
    """A CMYK JPEG (Adobe marker, transform 0) relabelled YCCK (transform 2): the decoder then
    reads the same coefficients as Y, Cb, Cr, K and converts them, as for a real YCCK file."""
    at = cmyk_jpeg.index(b"\xff\xeeAdobe"[:2] + b"\x00\x0eAdobe")
    transform = at + 4 + 5 + 6  # marker, length, "Adobe", version and two flag words
    assert cmyk_jpeg[transform] == 0
    return cmyk_jpeg[:transform] + b"\x02" + cmyk_jpeg[transform + 1 :]


def raw_png(w, h, depth, colour, samples: np.ndarray, chunks=(), interlace=False) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit colour or Adam7): `samples` holds
    `h × w × channels` values of `depth` bits."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]

    def rows(a: np.ndarray) -> bytes:
        out = b""
        for row in a.reshape(a.shape[0], -1):
            if depth == 16:
                data = row.astype(">u2").tobytes()
            elif depth == 8:
                data = row.astype(np.uint8).tobytes()
            else:
                data = np.packbits(
                    np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - depth :]
                ).tobytes()
            out += b"\x00" + data
        return out

    a = samples.reshape(h, w, channels)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                               (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
            sub = a[y0::dy, x0::dx]
            if sub.size:
                raw += rows(sub)
    else:
        raw = rows(a)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data)
        )

    head = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head)
            + b"".join(chunk(k, d) for k, d in chunks)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def decode_cases(rng):
    """(what, file bytes) for every JPEG and PNG kind the readers meet."""
    for w, h in [(1, 1), (17, 9), (33, 65), (500, 375), (375, 500)]:
        rgb = Image.fromarray(photo_like(rng, w, h, 3), "RGB")
        for sub in ["4:4:4", "4:2:2", "4:2:0"]:
            yield f"JPEG {w}x{h} {sub}", encoded(rgb, "JPEG", quality=90, subsampling=sub)
            yield f"JPEG {w}x{h} {sub} progressive", encoded(
                rgb, "JPEG", quality=80, subsampling=sub, progressive=True)
        yield f"JPEG {w}x{h} restart markers", encoded(
            rgb, "JPEG", quality=90, restart_marker_blocks=3)
        yield f"JPEG {w}x{h} grayscale", encoded(rgb.convert("L"), "JPEG", quality=85)
        cmyk = encoded(Image.fromarray(photo_like(rng, w, h, 4), "CMYK"), "JPEG", quality=90)
        yield f"JPEG {w}x{h} CMYK", cmyk
        yield f"JPEG {w}x{h} YCCK", as_ycck(cmyk)
        yield f"JPEG {w}x{h} RGB (Adobe, no YCbCr)", encoded(rgb, "JPEG", keep_rgb=True)
    rgb = Image.fromarray(photo_like(rng, 640, 480, 3), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: torchvision's ImageFolder, like Pillow's open, ignores it
    yield "JPEG EXIF orientation 6", encoded(rgb, "JPEG", exif=exif)
    # Stray bytes before a marker: libjpeg warns ("Corrupt JPEG data: 5 extraneous bytes before
    # marker 0xdb", seen in real photos) and decodes; Pillow does not complain either.
    clean = encoded(rgb, "JPEG", quality=90)
    dqt = clean.index(b"\xff\xdb")
    yield "JPEG extraneous bytes before a marker", clean[:dqt] + b"\x00" * 5 + clean[dqt:]
    eoi = clean.rindex(b"\xff\xd9")
    yield "JPEG extraneous bytes before EOI", clean[:eoi] + b"\x12\x34" + clean[eoi:]
    yield "JPEG 4000x3000", encoded(
        Image.fromarray(photo_like(rng, 4000, 3000, 3), "RGB"), "JPEG", quality=92)

    w, h = 37, 23
    rgb8 = photo_like(rng, w, h, 3)
    rgba8 = photo_like(rng, w, h, 4)
    g8 = photo_like(rng, w, h, 1)
    yield "PNG RGB", encoded(Image.fromarray(rgb8, "RGB"), "PNG")
    yield "PNG RGBA", encoded(Image.fromarray(rgba8, "RGBA"), "PNG")
    yield "PNG L", encoded(Image.fromarray(g8, "L"), "PNG")
    yield "PNG LA", encoded(Image.fromarray(rgba8, "RGBA").convert("LA"), "PNG")
    yield "PNG 1-bit", encoded(Image.fromarray(g8, "L").convert("1"), "PNG")
    yield "PNG P 256", encoded(Image.fromarray(rgb8, "RGB").quantize(256), "PNG")
    yield "PNG P + transparency", encoded(
        Image.fromarray(rgb8, "RGB").quantize(64), "PNG", transparency=3)
    for depth in (1, 2, 4):
        n = 1 << depth
        idx = rng.integers(0, n, (h, w))
        yield f"PNG gray {depth}-bit", raw_png(w, h, depth, 0, idx)
        # A palette shorter than the indices reach (an index past it is black in both).
        pal = rng.integers(0, 256, 3 * max(1, n - 1)).astype(np.uint8).tobytes()
        yield f"PNG P {depth}-bit", raw_png(w, h, depth, 3, idx, [(b"PLTE", pal)])
        yield f"PNG P {depth}-bit tRNS", raw_png(
            w, h, depth, 3, idx, [(b"PLTE", pal), (b"tRNS", b"\x00\x80")])
    for colour, ch in [(0, 1), (2, 3), (4, 2), (6, 4)]:
        v = rng.integers(0, 65536, (h, w, ch))
        v[0, :4, 0] = [0, 255, 256, 65535]
        yield f"PNG 16-bit colour type {colour}", raw_png(w, h, 16, colour, v)
        yield f"PNG 16-bit colour type {colour} interlaced", raw_png(w, h, 16, colour, v,
                                                                      interlace=True)
    low = rng.integers(0, 300, (h, w))
    yield "PNG 16-bit gray near 255", raw_png(w, h, 16, 0, low)
    yield "PNG 16-bit gray + tRNS", raw_png(w, h, 16, 0, low, [(b"tRNS", b"\x00\x07")])
    yield "PNG gray + tRNS", raw_png(w, h, 8, 0, g8, [(b"tRNS", b"\x00\x07")])
    yield "PNG RGB + tRNS", raw_png(w, h, 8, 2, rgb8, [(b"tRNS", b"\x00\x01\x00\x02\x00\x03")])
    yield "PNG RGB interlaced", raw_png(w, h, 8, 2, rgb8, interlace=True)


def decoding(t: Tally, rng) -> None:
    n = 0
    # Pillow suggests converting palettes with tRNS to RGBA; convert("RGB") is what is measured.
    warnings.filterwarnings("ignore", "Palette images with Transparency")
    for what, data in decode_cases(rng):
        want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        t.check(distill.decode_image(data), want, f"decode {what}")
        n += 1
    print(f"decoding: {n} cases")


def bad_arguments() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    for call, needle in [
        (lambda: distill.resized_crop(a, (3, 0, 2, 2), (2, 2)), "box"),
        (lambda: distill.resized_crop(a, None, (2, 2), "lanczos"), "interpolation"),
        (lambda: distill.center_crop(a, (2, 2), 1.5), "crop_pct"),
        (lambda: distill.resized_crop(np.zeros((4, 4, 5), np.uint8), None, (2, 2)), "channels"),
    ]:
        try:
            call()
        except ValueError as e:
            assert needle in str(e), f"{needle!r} not in {e}"
        else:
            raise AssertionError(f"no error for bad {needle}")
    print("bad arguments: 4 refused")


def main() -> int:
    rng = np.random.default_rng(20261202)
    t = Tally()
    resized_crops(t, rng)
    centre_crops(t, rng)
    large(t, rng)
    decoding(t, rng)
    bad_arguments()
    for f in t.failed[:20]:
        print("DIFFERS:", f)
    print(f"{t.cases - len(t.failed)} passed, {len(t.failed)} failed")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
