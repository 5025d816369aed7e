"""Pure-Python reader of distill label stores (format versions 1 to 6).

Written from ``formats/FORMAT.md``, the byte-level specification; it depends only on numpy,
the ``zstandard`` package and the ``xxhash`` package. A store is opened through its ``manifest.json``; every shard's header,
footer and index are checked against the manifest before any record is returned, and every chunk
is checked when it is decoded:

* all checksums of FORMAT.md (footer, index, chunk header, chunk payload) are **verified**, with
  xxh3-64 (seed 0), computed by the ``xxhash`` package (:func:`xxh3_64`);
* records are validated like distill's own decoder (aug-params bytes of absent fields must be
  zero, class indices distinct and below the class count, logits non-increasing and finite, q8
  gap deltas summing to at most 255).

Any violation raises :class:`StoreError` (a ``ValueError``) whose message starts with the file
and names the field, e.g. ``".../shard-0000000000-0000000100.dls: footer: magic: ..."``.

Usage::

    import distill_store
    store = distill_store.open_store("labels/")
    rec = store.record(epoch=0, sample=12)
    rec.indices, rec.logits, rec.tail          # top-k classes, logits relative to the top, t(1), t(4)
    rec.aug                                    # {"crop": {...}, "flip": ..., "cutout": ..., "mix": ...}
    p = rec.probs(4.0)                         # full distribution over all classes at tau = 4
    for rec in store.epoch(1):                 # records of epoch 1 in sample order
        ...
    arrays = store.epoch_arrays(1)             # the same, as numpy arrays (fast path)
    dense = arrays.probs(4.0)                  # (samples, classes) float32

Probabilities are rebuilt exactly as FORMAT.md section 5 says and in the same arithmetic as
``distill inspect`` (f32 tail interpolation, f64 exponentials and sums, f32 results).
"""

from __future__ import annotations

import bisect
import json
import math
import mmap
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import xxhash
import zstandard

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "StoreError",
    "Store",
    "Shard",
    "Record",
    "EpochArrays",
    "FeatureHead",
    "open_store",
    "decode_aug",
    "mix_primary_weight",
    "row_bytes",
    "dense_probs",
    "xxh3_64",
]

FORMAT_NAME = "distill-label-store"
FORMAT_VERSION = 6

MANIFEST_FILE = "manifest.json"
WRITING_FILE = "writing.json"

FILE_MAGIC = b"DSTLSHRD"
FEATURE_MAGIC = b"DSTLFEAT"
FOOTER_MAGIC = b"DSTLEND\0"
CHUNK_MAGIC = b"DLCK"
FILE_HEADER_BYTES = 16
CHUNK_HEADER_BYTES = 112
INDEX_ENTRY_BYTES = 40
FOOTER_BYTES = 80
AUG_BYTES = 39

CODEC_IDS = {1: "f16", 2: "q8"}
FEATURE_CODEC_IDS = {3: "q8", 4: "f16"}
MAX_FEATURE_DIM = 1 << 16
Q8_STEP = np.float32(0.125)
Q8_TAIL_STEP = np.float32(1.0 / 16.0)


class StoreError(ValueError):
    """A store, shard or record that cannot be read: the message names the file and field."""


def _err(where: Any, field: str, what: str) -> StoreError:
    return StoreError(f"{where}: {field}: {what}")


# --------------------------------------------------------------------------------------------
# xxh3-64, seed 0 (the checksum of every distill store)
# --------------------------------------------------------------------------------------------


def xxh3_64(data: bytes | bytearray | memoryview) -> int:
    """xxh3-64 with seed 0 of ``data`` (the ``xxhash`` package: the reference C library)."""
    return xxhash.xxh3_64_intdigest(data)


# --------------------------------------------------------------------------------------------
# Aug params (FORMAT.md 4.1)
# --------------------------------------------------------------------------------------------

_F_CROP, _F_FLIP, _F_CUTOUT, _F_MIXUP, _F_CUTMIX = 1, 2, 4, 8, 16
_F_PARTNER_CROP, _F_PARTNER_FLIP, _F_RESERVED = 32, 64, 128
# (flag or None for "zero unless this flag", byte range, field name for errors)
_AUG_FIELDS = [
    (_F_CROP, 1, 9, "crop"),
    (_F_CUTOUT, 9, 17, "cutout"),
    (_F_PARTNER_CROP, 21, 29, "partner_crop"),
    (_F_MIXUP, 29, 31, "lambda"),
    (_F_CUTMIX, 31, 39, "cutmix"),
]


def _box(b: bytes | list[int], at: int) -> dict:
    v = [b[at + i] | (b[at + i + 1] << 8) for i in range(0, 8, 2)]
    return {"x": v[0], "y": v[1], "w": v[2], "h": v[3]}


def _aug_problem(flags: np.ndarray, aug: np.ndarray) -> np.ndarray:
    """Per-row error code (0 = fine) of aug params; codes index _AUG_ERRORS."""
    code = np.zeros(len(flags), dtype=np.int64)

    def mark(mask: np.ndarray, c: int) -> None:
        code[(code == 0) & mask] = c

    has = lambda f: (flags & f) != 0  # noqa: E731
    mixed = has(_F_MIXUP) | has(_F_CUTMIX)
    mark(has(_F_RESERVED), 1)
    mark(has(_F_MIXUP) & has(_F_CUTMIX), 2)
    mark(~mixed & (has(_F_PARTNER_CROP) | has(_F_PARTNER_FLIP)), 3)
    for i, (flag, a, b, _) in enumerate(_AUG_FIELDS):
        mark(~has(flag) & aug[:, a:b].any(axis=1), 4 + i)
    mark(~mixed & aug[:, 17:21].any(axis=1), 4 + len(_AUG_FIELDS))
    return code


_AUG_ERRORS = [
    None,
    ("aug.flags", "reserved bit 7 is set"),
    ("aug.flags", "both mixup and cutmix are set"),
    ("aug.flags", "partner crop or flip set without a mix"),
] + [(f"aug.{name}", "bytes of an absent field are not zero") for *_, name in _AUG_FIELDS] + [
    ("aug.partner", "bytes of an absent field are not zero")
]


def _aug_dict(b: bytes | list[int]) -> dict:
    """The 39 validated bytes as the JSON object ``distill inspect`` prints."""
    f = b[0]
    mix = None
    if f & (_F_MIXUP | _F_CUTMIX):
        if f & _F_CUTMIX:
            kind = {"kind": "cutmix", "region": _box(b, 31)}
        else:
            kind = {"kind": "mixup", "lambda_q": b[29] | (b[30] << 8)}
        mix = {
            "partner": b[17] | (b[18] << 8) | (b[19] << 16) | (b[20] << 24),
            "partner_crop": _box(b, 21) if f & _F_PARTNER_CROP else None,
            "partner_flip": bool(f & _F_PARTNER_FLIP),
            "kind": kind,
        }
    return {
        "crop": _box(b, 1) if f & _F_CROP else None,
        "flip": bool(f & _F_FLIP),
        "cutout": _box(b, 9) if f & _F_CUTOUT else None,
        "mix": mix,
    }


def decode_aug(b: bytes) -> dict:
    """Decodes and checks one 39-byte AugParams (FORMAT.md 4.1) into a dict:
    ``{"crop": box|None, "flip": bool, "cutout": box|None, "mix": None|{"partner", "partner_crop",
    "partner_flip", "kind": {"kind": "mixup", "lambda_q"} | {"kind": "cutmix", "region"}}}`` with
    boxes ``{"x", "y", "w", "h"}`` (pixels), the same structure ``distill inspect --json`` prints.
    Raises :class:`StoreError` on inconsistent bytes."""
    if len(b) < AUG_BYTES:
        raise _err("aug params", "aug", f"truncated: {len(b)} of {AUG_BYTES} bytes")
    a = np.frombuffer(bytes(b[:AUG_BYTES]), np.uint8).reshape(1, AUG_BYTES)
    code = int(_aug_problem(a[:, 0], a)[0])
    if code:
        field, what = _AUG_ERRORS[code]
        raise _err("aug params", field, what)
    return _aug_dict(bytes(b[:AUG_BYTES]))


def mix_primary_weight(aug: dict, out_w: int, out_h: int) -> float:
    """Label weight of the primary image of a decoded aug dict (1.0 when unmixed): lambda for
    mixup, ``1 - area(region) / (out_w * out_h)`` for cutmix (FORMAT.md 4.1)."""
    mix = aug.get("mix")
    if not mix:
        return 1.0
    kind = mix["kind"]
    if kind["kind"] == "mixup":
        return float(np.float32(kind["lambda_q"]) / np.float32(65535.0))
    r = kind["region"]
    return float(np.float32(1.0) - np.float32(r["w"] * r["h"]) / np.float32(out_w * out_h))


# --------------------------------------------------------------------------------------------
# Soft labels (FORMAT.md 4.3 and 5)
# --------------------------------------------------------------------------------------------


def _check_tau(tau: float) -> np.float32:
    t = np.float32(tau)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a positive number, got {tau}")
    return t


def _tail_logit(logits: np.ndarray, tail: np.ndarray, classes: int, tau: np.float32):
    """Tail logit t(tau) in f32 (FORMAT.md 5.1), or None when k == classes."""
    if classes <= len(logits):
        return None
    t1, t4 = np.float32(tail[0]), np.float32(tail[1])
    b = (t1 - t4) * (np.float32(4.0) / np.float32(3.0))
    a = t1 - b
    if tau == np.float32(1.0):
        t = t1
    elif tau == np.float32(4.0):
        t = t4
    else:
        t = a + b / tau
    return min(t, np.float32(logits[-1]))


def _no_soft_labels(classes: int) -> None:
    if classes == 0:
        raise StoreError("the store holds no soft labels (an embedding-only teacher's views and "
                         "features): there is no distribution to rebuild")


def _top_probs(logits: np.ndarray, tail: np.ndarray, classes: int, tau: float):
    _no_soft_labels(classes)
    t32 = _check_tau(tau)
    inv = 1.0 / float(t32)
    # Same operations as distill's SoftLabel::probabilities_into: f64 exponentials, a sequential
    # f64 sum, the top values rounded to f32 before scaling, f32 results.
    e = [math.exp(float(v) * inv) for v in logits]
    z = 0.0
    for v in e:
        z += v
    t = _tail_logit(logits, tail, classes, t32)
    tail_e = 0.0
    if t is not None:
        tail_e = math.exp(float(t) * inv)
        z += float(classes - len(logits)) * tail_e
    scale = 1.0 / z
    top = (np.array(e, dtype=np.float32).astype(np.float64) * scale).astype(np.float32)
    return top, np.float32(tail_e * scale)


def dense_probs(
    indices: np.ndarray, logits: np.ndarray, tail: np.ndarray, classes: int, tau: float
) -> np.ndarray:
    """Vectorized rebuild (FORMAT.md 5) of many records: ``indices``/``logits`` (n, k),
    ``tail`` (n, 2) -> (n, classes) float32. Agrees with :meth:`Record.probs` to float rounding
    (numpy's exp may differ from the C library's in the last bit)."""
    _no_soft_labels(classes)
    t32 = _check_tau(tau)
    inv = 1.0 / float(t32)
    logits = np.asarray(logits, dtype=np.float32)
    tail = np.asarray(tail, dtype=np.float32)
    n, k = logits.shape
    e = np.exp(logits.astype(np.float64) * inv)
    z = np.cumsum(e, axis=1)[:, -1] if k else np.zeros(n)
    tail_e = np.zeros(n)
    if classes > k:
        t1, t4 = tail[:, 0], tail[:, 1]
        b = (t1 - t4) * (np.float32(4.0) / np.float32(3.0))
        a = t1 - b
        if t32 == np.float32(1.0):
            t = t1
        elif t32 == np.float32(4.0):
            t = t4
        else:
            t = a + b / t32
        t = np.minimum(t, logits[:, -1])
        tail_e = np.exp(t.astype(np.float64) * inv)
        z = z + float(classes - k) * tail_e
    scale = 1.0 / z
    out = np.empty((n, classes), dtype=np.float32)
    out[:] = (tail_e * scale).astype(np.float32)[:, None]
    top = (e.astype(np.float32).astype(np.float64) * scale[:, None]).astype(np.float32)
    np.put_along_axis(out, np.asarray(indices, dtype=np.int64), top, axis=1)
    return out


@dataclass(frozen=True, eq=False)
class Record:
    """One stored record.

    ``indices``: the k class ids (int64), by decreasing teacher logit; ``logits``: their logits
    relative to the top one (float32, ``logits[0] == 0``, non-increasing); ``tail``: the tail
    logits ``t(1)``, ``t(4)`` (float32, relative to the top; both 0 when k == classes);
    ``aug``: the decoded augmentation params (see :func:`decode_aug`)."""

    epoch: int
    sample: int
    aug: dict
    indices: np.ndarray
    logits: np.ndarray
    tail: np.ndarray
    classes: int

    @property
    def k(self) -> int:
        return len(self.indices)

    def tail_logit(self, tau: float) -> float | None:
        """Equivalent logit of every tail class at ``tau`` (FORMAT.md 5.1); None without a tail."""
        t = _tail_logit(self.logits, self.tail, self.classes, _check_tau(tau))
        return None if t is None else float(t)

    def top_probs(self, tau: float) -> tuple[np.ndarray, float]:
        """(probabilities of ``indices`` as float32, probability of each other class) at ``tau``:
        the ``probabilities`` and ``tail_probability_each`` of ``distill inspect --json``."""
        top, each = _top_probs(self.logits, self.tail, self.classes, tau)
        return top, float(each)

    def probs(self, tau: float = 1.0) -> np.ndarray:
        """The rebuilt teacher distribution over all ``classes`` at temperature ``tau``
        (FORMAT.md 5), float32."""
        top, each = _top_probs(self.logits, self.tail, self.classes, tau)
        out = np.full(self.classes, each, dtype=np.float32)
        out[self.indices] = top
        return out


@dataclass(eq=False)
class EpochArrays:
    """Records of samples ``samples`` (a range) of one epoch, as arrays: ``aug_bytes`` (n, 39)
    uint8 (validated; decode one with :func:`decode_aug`), ``indices`` (n, k) int64, ``logits``
    (n, k) float32, ``tail`` (n, 2) float32."""

    epoch: int
    samples: range
    classes: int
    aug_bytes: np.ndarray
    indices: np.ndarray
    logits: np.ndarray
    tail: np.ndarray

    def __len__(self) -> int:
        return len(self.samples)

    def aug(self, i: int) -> dict:
        """Aug params of the ``i``-th record (sample ``samples[i]``)."""
        return _aug_dict(self.aug_bytes[i].tobytes())

    def record(self, i: int) -> Record:
        return Record(
            self.epoch,
            self.samples[i],
            self.aug(i),
            self.indices[i],
            self.logits[i],
            self.tail[i],
            self.classes,
        )

    def probs(self, tau: float = 1.0) -> np.ndarray:
        """(n, classes) float32 rebuilt distributions at ``tau`` (see :func:`dense_probs`)."""
        return dense_probs(self.indices, self.logits, self.tail, self.classes, tau)


# --------------------------------------------------------------------------------------------
# Shards (FORMAT.md 3)
# --------------------------------------------------------------------------------------------


def _u32(b, at: int) -> int:
    return int.from_bytes(b[at : at + 4], "little")


def _u64(b, at: int) -> int:
    return int.from_bytes(b[at : at + 8], "little")


def _check_version(where: str, field: str, v: int) -> None:
    if v > FORMAT_VERSION:
        raise _err(
            where,
            field,
            f"format version {v} is newer than this reader's {FORMAT_VERSION}: upgrade the reader",
        )
    if v == 0:
        raise _err(where, field, "format version 0 is not valid")


def row_bytes(classes: int, k: int, codec: str) -> int:
    """Bytes of one row (FORMAT.md 4); a store without soft labels (k 0) keeps the view alone."""
    if k == 0:
        return AUG_BYTES
    w = 2 if classes <= 65536 else 4
    gap, tail = (1, 2) if codec == "q8" else (2, 4)
    return AUG_BYTES + k * w + (k - 1) * gap + tail


@dataclass(frozen=True)
class IndexEntry:
    epoch: int
    first: int
    count: int
    raw_len: int
    offset: int
    payload_len: int
    payload_xxh3: int


def feature_row_bytes(dim: int, codec: str) -> int:
    """Bytes of one stored feature vector (FORMAT.md 6.1)."""
    return 4 + dim if codec == "q8" else 2 * dim


class Shard:
    """One shard file, memory-mapped; header, footer and index checked when opened. A feature
    file (``features=True``, FORMAT.md 6) has the same container: ``classes`` is then its stored
    dimensions, ``k`` 0 and ``codec`` its feature codec."""

    def __init__(self, path: str, features: bool = False):
        self.path = path
        self.features = features
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as e:
            raise StoreError(f"{path}: cannot read shard: {e}") from e
        self.size = len(self._buf)
        self._parse()

    def _parse(self) -> None:
        b, n, p = self._buf, self.size, self.path
        if n < FILE_HEADER_BYTES + FOOTER_BYTES:
            raise _err(
                p,
                "size",
                f"file is {n} bytes, smaller than its header and footer "
                f"({FILE_HEADER_BYTES + FOOTER_BYTES} bytes): truncated or unfinished",
            )
        want, other = (FEATURE_MAGIC, FILE_MAGIC) if self.features else (FILE_MAGIC, FEATURE_MAGIC)
        if b[:8] != want:
            what = "not a distill shard file"
            if b[:8] == other:
                what = ("a label shard where a feature file belongs" if self.features
                        else "a feature file where a label shard belongs")
            raise _err(p, "header.magic", f"wrong magic: {what}")
        _check_version(p, "header.version", _u32(b, 8))
        if _u32(b, 12) != 0:
            raise _err(p, "header.reserved", "reserved bytes are not zero")
        f = bytes(b[n - FOOTER_BYTES :])
        if f[64:72] != FOOTER_MAGIC:
            raise _err(
                p,
                "footer.magic",
                "no footer magic at the end: the shard is truncated or its writer did not finish",
            )
        _check_version(p, "footer.version", _u32(f, 56))
        if _u64(f, 72) != xxh3_64(f[:72]):
            raise _err(p, "footer.checksum", "footer checksum mismatch")
        codec_id = f[40]
        ids = FEATURE_CODEC_IDS if self.features else CODEC_IDS
        if codec_id not in ids:
            raise _err(p, "footer.codec", f"unknown codec id {codec_id}")
        self.codec = ids[codec_id]
        self.epochs = _u32(f, 12)
        self.start, self.end = _u32(f, 16), _u32(f, 20)
        self.classes, self.k = _u32(f, 24), _u32(f, 28)
        self.chunk_records = _u32(f, 32)
        if self.features:
            if not (1 <= self.classes <= MAX_FEATURE_DIM) or self.k != 0:
                raise _err(p, "footer.k", f"a feature file of {self.classes} dimensions, k {self.k}")
            self.row_bytes = feature_row_bytes(self.classes, self.codec)
        else:
            views_only = self.classes == 0 and self.k == 0
            if not views_only and (
                not (1 <= self.classes <= MAX_CLASSES) or not (1 <= self.k <= self.classes)
            ):
                raise _err(p, "footer.k", f"k = {self.k} with {self.classes} classes")
            self.row_bytes = row_bytes(self.classes, self.k, self.codec)
        if _u32(f, 36) != self.row_bytes:
            raise _err(
                p,
                "footer.row_bytes",
                f"row size {_u32(f, 36)} does not match k = {self.k} with {self.classes} classes "
                f"({self.row_bytes} bytes)",
            )
        if self.epochs == 0 or self.end <= self.start or self.chunk_records == 0:
            raise _err(
                p,
                "footer",
                f"epochs {self.epochs}, samples {self.start}..{self.end}, chunk_records "
                f"{self.chunk_records} describe no records",
            )
        per_epoch = -(-(self.end - self.start) // self.chunk_records)
        count, index_offset = _u32(f, 8), _u64(f, 0)
        index_end = n - FOOTER_BYTES
        if (
            count != self.epochs * per_epoch
            or index_offset < FILE_HEADER_BYTES
            or index_end - index_offset != count * INDEX_ENTRY_BYTES
        ):
            raise _err(
                p,
                "footer.index",
                f"index of {count} chunks at offset {index_offset} does not fit a {n}-byte file "
                f"holding {self.epochs * per_epoch} chunks",
            )
        index = bytes(b[index_offset:index_end])
        self.index_xxh3 = _u64(f, 48)
        if xxh3_64(index) != self.index_xxh3:
            raise _err(p, "index.checksum", "chunk index checksum mismatch")
        raw = np.frombuffer(index, np.uint8).reshape(count, INDEX_ENTRY_BYTES)
        cols = {
            "epoch": raw[:, 0:4].copy().view("<u4")[:, 0],
            "first": raw[:, 4:8].copy().view("<u4")[:, 0],
            "count": raw[:, 8:12].copy().view("<u4")[:, 0],
            "raw_len": raw[:, 12:16].copy().view("<u4")[:, 0],
            "offset": raw[:, 16:24].copy().view("<u8")[:, 0],
            "payload_len": raw[:, 24:28].copy().view("<u4")[:, 0],
            "xxh3": raw[:, 32:40].copy().view("<u8")[:, 0],
        }
        self.index: list[IndexEntry] = []
        self.by_epoch = [[-1] * per_epoch for _ in range(self.epochs)]
        at = FILE_HEADER_BYTES
        for i in range(count):
            e = IndexEntry(
                int(cols["epoch"][i]),
                int(cols["first"][i]),
                int(cols["count"][i]),
                int(cols["raw_len"][i]),
                int(cols["offset"][i]),
                int(cols["payload_len"][i]),
                int(cols["xxh3"][i]),
            )
            where = f"index[{i}] (epoch {e.epoch}, samples {e.first}..{e.first + e.count})"
            if e.epoch >= self.epochs:
                raise _err(p, where, f"epoch beyond the shard's {self.epochs}")
            j = (e.first - self.start) // self.chunk_records
            cs = self.start + j * self.chunk_records
            if (
                e.first < self.start
                or j >= per_epoch
                or e.first != cs
                or e.count != min(cs + self.chunk_records, self.end) - cs
            ):
                raise _err(p, where, "not a chunk boundary of this shard")
            if self.by_epoch[e.epoch][j] != -1:
                raise _err(p, where, "appears twice")
            self.by_epoch[e.epoch][j] = i
            if e.raw_len != e.count * self.row_bytes:
                raise _err(p, where, f"raw length {e.raw_len} is not count × row size")
            if e.raw_len > MAX_ZSTD_RATIO * e.payload_len:
                raise _err(
                    p, where, f"raw length {e.raw_len} cannot come from a {e.payload_len}-byte zstd payload"
                )
            end = e.offset + CHUNK_HEADER_BYTES + e.payload_len
            if e.offset != at or end > index_offset:
                raise _err(p, where, f"offset {e.offset} is not where the previous chunk ends ({at})")
            at = end
            self.index.append(e)
        if at != index_offset:
            raise _err(p, "index", f"chunks end at {at}, the index starts at {index_offset}")

    def chunk_header(self, i: int) -> dict:
        """Parsed and checked header of chunk ``i`` (index position), including its quality sums."""
        e = self.index[i]
        where = f"chunk {i} (epoch {e.epoch}, samples {e.first}..{e.first + e.count})"
        h = bytes(self._buf[e.offset : e.offset + CHUNK_HEADER_BYTES])
        if len(h) < CHUNK_HEADER_BYTES:
            raise _err(self.path, where, "chunk header truncated")
        if h[:4] != CHUNK_MAGIC:
            raise _err(self.path, f"{where}: header.magic", "chunk header has the wrong magic")
        if _u64(h, 104) != xxh3_64(h[:104]):
            raise _err(self.path, f"{where}: header.checksum", "chunk header checksum mismatch")
        got = (
            _u32(h, 4),
            _u32(h, 8),
            _u32(h, 12),
            _u32(h, 16),
            _u32(h, 20),
            _u64(h, 24),
        )
        if got != (e.epoch, e.first, e.count, e.raw_len, e.payload_len, e.payload_xxh3):
            raise _err(self.path, where, "chunk header disagrees with the footer index")
        return {
            "epoch": got[0],
            "first": got[1],
            "count": got[2],
            "raw_len": got[3],
            "payload_len": got[4],
            "payload_xxh3": got[5],
            "quality_sums": np.frombuffer(h[32:96], "<f8").tolist(),
        }

    def chunk_rows(self, i: int) -> np.ndarray:
        """Checks, decompresses and un-transposes chunk ``i``: (count, row_bytes) uint8."""
        e = self.index[i]
        where = f"chunk {i} (epoch {e.epoch}, samples {e.first}..{e.first + e.count})"
        self.chunk_header(i)
        start = e.offset + CHUNK_HEADER_BYTES
        payload = self._buf[start : start + e.payload_len]
        if len(payload) != e.payload_len:
            raise _err(self.path, where, "payload runs past the end of the file")
        if xxh3_64(payload) != e.payload_xxh3:
            raise _err(self.path, f"{where}: payload.checksum", "payload checksum mismatch")
        try:
            raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=e.raw_len)
        except zstandard.ZstdError as err:
            raise _err(self.path, f"{where}: payload", f"zstd: {err}") from err
        if len(raw) != e.raw_len:
            raise _err(
                self.path, f"{where}: payload", f"decompressed {len(raw)} bytes, expected {e.raw_len}"
            )
        # Byte j of row i sits at j*n + i: the payload is (row_bytes, n); transpose to (n, row_bytes).
        cols = np.frombuffer(raw, np.uint8).reshape(self.row_bytes, e.count)
        return np.ascontiguousarray(cols.T)

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()


def _decode_rows(rows: np.ndarray, classes: int, k: int, codec: str, where, first: int):
    """Vectorized decode and check of rows (n, row_bytes) -> (aug_bytes, indices, logits, tail)."""
    n = rows.shape[0]
    aug = rows[:, :AUG_BYTES]
    code = _aug_problem(aug[:, 0], aug)
    if code.any():
        r = int(np.argmax(code != 0))
        field, what = _AUG_ERRORS[int(code[r])]
        raise _err(where(first + r), field, what)
    if k == 0:
        # A store without soft labels: the rows are the views.
        empty = np.zeros((n, 0), dtype=np.int64)
        return (np.ascontiguousarray(aug), empty, empty.astype(np.float32),
                np.zeros((n, 2), dtype=np.float32))
    w = 2 if classes <= 65536 else 4
    at = AUG_BYTES
    idx = rows[:, at : at + k * w].copy().view("<u2" if w == 2 else "<u4").astype(np.int64)
    at += k * w
    bad = idx >= classes
    if bad.any():
        r, i = map(int, np.argwhere(bad)[0])
        raise _err(
            where(first + r),
            f"indices[{i}]",
            f"class {idx[r, i]} is not below the class count {classes}",
        )
    if k > 1:
        srt = np.sort(idx, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
        if dup.any():
            r = int(np.argmax(dup))
            seen = set()
            for i, c in enumerate(idx[r].tolist()):
                if c in seen:
                    raise _err(where(first + r), f"indices[{i}]", f"class {c} appears twice")
                seen.add(c)
    logits = np.zeros((n, k), dtype=np.float32)
    if codec == "f16":
        logits[:, 1:] = -rows[:, at : at + 2 * (k - 1)].copy().view("<f2").astype(np.float32)
        at += 2 * (k - 1)
        tail = rows[:, at : at + 4].copy().view("<f2").astype(np.float32)
    else:
        q = np.cumsum(rows[:, at : at + k - 1].astype(np.int64), axis=1)
        at += k - 1
        over = q > 255
        if over.any():
            r, i = map(int, np.argwhere(over)[0])
            raise _err(where(first + r), f"logits[{i + 1}]", "q8 gap deltas sum past 255")
        logits[:, 1:] = -(q.astype(np.float32)) * Q8_STEP
        kth = logits[:, -1]
        d = rows[:, at : at + 2].astype(np.float32)
        t1 = kth - d[:, 0] * Q8_TAIL_STEP
        t4 = t1 - d[:, 1] * Q8_TAIL_STEP
        tail = np.stack([t1, t4], axis=1)
        if classes == k:
            tail = np.zeros((n, 2), dtype=np.float32)
    fin = np.isfinite(logits)
    if not fin.all():
        r, i = map(int, np.argwhere(~fin)[0])
        raise _err(where(first + r), f"logits[{i}]", f"non-finite value {logits[r, i]}")
    if k > 1:
        inc = logits[:, 1:] > logits[:, :-1]
        if inc.any():
            r, i = map(int, np.argwhere(inc)[0])
            raise _err(
                where(first + r), f"logits[{i + 1}]", "top-k logits must start at 0 and not increase"
            )
    fin = np.isfinite(tail)
    if not fin.all():
        r, i = map(int, np.argwhere(~fin)[0])
        raise _err(where(first + r), f"tail[{i}]", f"non-finite value {tail[r, i]}")
    return np.ascontiguousarray(aug), idx, logits, np.ascontiguousarray(tail, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Store (FORMAT.md 1-2)
# --------------------------------------------------------------------------------------------


# FORMAT.md 1.2: bounds that keep a hostile store from making a reader allocate without limit.
MAX_CLASSES = 1 << 24
MAX_ZSTD_RATIO = 128 * 1024 // 4


def shard_file_name(start: int, end: int) -> str:
    return f"shard-{start:010d}-{end:010d}.dls"


def feature_file_name(head: int, start: int, end: int) -> str:
    return f"features-{head}-{start:010d}-{end:010d}.dlf"


def decode_features(rows: np.ndarray, dim: int, codec: str, where: str) -> np.ndarray:
    """Rows (n, row_bytes) of a feature file -> float32 (n, dim) (FORMAT.md 6.1)."""
    if codec == "q8":
        scale = rows[:, :4].copy().view("<f4")[:, 0]
        if not np.all(np.isfinite(scale) & (scale >= 0)):
            raise _err(where, "features", "a q8 scale is negative or not finite")
        codes = rows[:, 4:].view(np.int8)
        if np.any(codes == -128):
            raise _err(where, "features", "q8 code -128")
        return codes.astype(np.float32) * scale[:, None]
    v = rows.copy().view("<f2").astype(np.float32)
    if not np.all(np.isfinite(v)):
        raise _err(where, "features", "an f16 value is not finite")
    return v


class FeatureHead:
    """One stored feature head (``manifest["features"]["heads"][i]``): its files opened and
    checked against the manifest; vectors decoded to float32."""

    def __init__(self, store: "Store", i: int, head: dict, codec: str):
        where = f"{store.path}: features.heads[{i}]"
        self.index, self.codec = i, codec
        self.teacher = _require(head, "teacher", int, where)
        self.output = _require(head, "output", str, where)
        self.dim = _require(head, "dim", int, where)
        self.stored_dim = _require(head, "stored_dim", int, where)
        self.quality = head.get("quality", {})
        if not (1 <= self.stored_dim <= min(self.dim, MAX_FEATURE_DIM)):
            raise _err(where, "stored_dim", f"{self.stored_dim} of {self.dim} dimensions")
        entries = _require(head, "shards", list, where)
        if len(entries) != len(store.shards):
            raise _err(where, "shards", f"{len(entries)} files for {len(store.shards)} shards")
        self.shards: list[Shard] = []
        for j, (entry, label) in enumerate(zip(entries, store.shards)):
            w = f"{where}.shards[{j}]"
            file = _require(entry, "file", str, w)
            rng = _range(entry, "samples", w)
            if (rng.start, rng.stop) != (label.start, label.end):
                raise _err(w, "samples", f"{rng.start}..{rng.stop}, the label shard's are "
                                         f"{label.start}..{label.end}")
            problem = _file_problem(file, feature_file_name(i, rng.start, rng.stop), rng)
            if problem:
                raise _err(w, "file", problem)
            path = os.path.join(store.path, file)
            if not os.path.exists(path):
                raise StoreError(f"{store.path}: feature file {file} is missing")
            shard = Shard(path, features=True)
            for field, want, got in [("epochs", store.epochs, shard.epochs),
                                     ("stored_dim", self.stored_dim, shard.classes),
                                     ("codec", codec, shard.codec),
                                     ("chunk_records", store.chunk_records, shard.chunk_records),
                                     ("bytes", entry.get("bytes"), shard.size),
                                     ("checksum", entry.get("checksum"),
                                      f"xxh3:{shard.index_xxh3:016x}")]:
                if want != got:
                    raise _err(path, field, f"manifest and file disagree: manifest says {want}, "
                                            f"file has {got}")
            self.shards.append(shard)

    def epoch(self, epoch: int) -> np.ndarray:
        """Every vector of ``epoch``, float32 (samples, stored_dim), in sample order."""
        parts = []
        for shard in self.shards:
            for c in shard.by_epoch[epoch]:
                e = shard.index[c]
                where = f"{shard.path}: chunk {c} (epoch {epoch}, samples {e.first}..)"
                parts.append(decode_features(shard.chunk_rows(c), self.stored_dim, self.codec, where))
        return np.concatenate(parts)

    def quality_sums(self) -> list[float]:
        """The eight reconstruction sums (FORMAT.md 6.2) over all chunk headers."""
        return _chunk_sums(self.shards)


def _chunk_sums(shards: list[Shard]) -> list[float]:
    """The eight f64 sums of every chunk header of ``shards``, added in file and shard order."""
    total = [0.0] * 8
    for shard in shards:
        for i in range(len(shard.index)):
            for j, v in enumerate(shard.chunk_header(i)["quality_sums"]):
                total[j] += v
    return total


def _shard_file_problem(file: str, rng: range) -> str | None:
    return _file_problem(file, shard_file_name(rng.start, rng.stop), rng)


def _file_problem(file: str, want: str, rng: range) -> str | None:
    """Why a manifest's shard path could lead outside the shard it names (FORMAT.md 1.2)."""
    if file.startswith("/") or "\\" in file or "\0" in file:
        return f"{file!r}: absolute paths, backslashes and NUL are not allowed"
    *dirs, name = file.split("/")
    ups = 0
    while ups < len(dirs) and dirs[ups] == "..":
        ups += 1
    if any(d in ("", ".", "..") for d in dirs[ups:]):
        return f"{file!r}: only a leading run of `..` may leave the store directory"
    if name != want:
        return f"{file!r}: the file of samples {rng.start}..{rng.stop} is named {want}"
    return None


def _require(m: dict, key: str, typ, where: str):
    if key not in m:
        raise _err(where, key, "missing")
    v = m[key]
    if typ is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:
        ok = isinstance(v, typ)
    if not ok:
        raise _err(where, key, f"expected {getattr(typ, '__name__', typ)}, got {v!r}")
    return v


def _range(m: dict, key: str, where: str) -> range:
    r = _require(m, key, dict, where)
    s = _require(r, "start", int, f"{where}: {key}")
    e = _require(r, "end", int, f"{where}: {key}")
    return range(s, e)


class Store:
    """An opened, checked, read-only label store.

    Attributes: ``path``, ``manifest`` (the parsed manifest.json), ``classes``, ``topk``,
    ``codec`` (``"q8"``/``"f16"``), ``epochs``, ``samples`` (a ``range`` of sample indices),
    ``chunk_records``, ``shards`` (list of :class:`Shard`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        mpath = os.path.join(self.path, MANIFEST_FILE)
        try:
            with open(mpath, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            why = (
                "its writer has not finished (resume the run that writes it)"
                if os.path.exists(os.path.join(self.path, WRITING_FILE))
                else "not a label store"
            )
            raise StoreError(f"{self.path}: no {MANIFEST_FILE}: {why}") from None
        try:
            m = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise _err(mpath, "manifest", f"not valid JSON: {e}") from e
        if not isinstance(m, dict):
            raise _err(mpath, "manifest", "not a JSON object")
        self.manifest = m
        v = m.get("format_version")
        if isinstance(v, int) and not isinstance(v, bool) and v > FORMAT_VERSION:
            raise _err(
                mpath,
                "format_version",
                f"store format version {v} is newer than this reader's {FORMAT_VERSION}: "
                "upgrade the reader",
            )
        if _require(m, "format", str, mpath) != FORMAT_NAME:
            raise _err(mpath, "format", f"{m['format']!r} is not {FORMAT_NAME!r}")
        if _require(m, "format_version", int, mpath) < 1:
            raise _err(mpath, "format_version", f"{v} is not supported (this reader knows 1..={FORMAT_VERSION})")
        self.epochs = _require(m, "epochs", int, mpath)
        self.classes = _require(m, "classes", int, mpath)
        # Version 4: a transfer set read without hard labels says so (`dataset.labelled`).
        ds = m.get("dataset") if isinstance(m.get("dataset"), dict) else {}
        self.labelled = ds.get("labelled", True)
        if not isinstance(self.labelled, bool):
            raise _err(mpath, "dataset.labelled", f"{self.labelled!r} is not a boolean")
        if not self.labelled and m["format_version"] < 4:
            raise _err(mpath, "format_version",
                       f"{m['format_version']} cannot describe data without hard labels (needs 4)")
        if m.get("features") is not None and m["format_version"] < 5:
            raise _err(mpath, "format_version",
                       f"{m['format_version']} cannot describe teacher features (needs 5)")
        self.topk = _require(m, "k", int, mpath)
        # Version 6: an embedding-only teacher's store holds no soft labels (classes and k 0).
        self.has_labels = not (self.classes == 0 and self.topk == 0)
        if not self.has_labels:
            if m["format_version"] < 6:
                raise _err(mpath, "format_version",
                           f"{m['format_version']} cannot describe a store without soft labels "
                           "(needs 6)")
            if m.get("features") is None:
                raise _err(mpath, "k", "0 (no soft labels) in a store without features")
        self.codec = _require(m, "codec", str, mpath)
        self.chunk_records = _require(m, "chunk_records", int, mpath)
        self.samples = _range(m, "samples", mpath)
        if self.codec not in ("q8", "f16"):
            raise _err(mpath, "codec", f"unknown codec {self.codec!r} (expected f16 or q8)")
        if self.has_labels and not (1 <= self.classes <= MAX_CLASSES):
            raise _err(mpath, "classes", f"{self.classes} is not between 1 and {MAX_CLASSES}")
        if self.has_labels and not (1 <= self.topk <= self.classes):
            raise _err(mpath, "k", f"k = {self.topk} must be between 1 and {self.classes}")
        if self.epochs < 1:
            raise _err(mpath, "epochs", "must be at least 1")
        if self.chunk_records < 1:
            raise _err(mpath, "chunk_records", "must be at least 1")
        if len(self.samples) == 0:
            raise _err(mpath, "samples", f"range {self.samples.start}..{self.samples.stop} is empty")
        entries = _require(m, "shards", list, mpath)
        self.row_bytes = row_bytes(self.classes, self.topk, self.codec)
        self.shards: list[Shard] = []
        at = self.samples.start
        for i, entry in enumerate(entries):
            w = f"{mpath}: shards[{i}]"
            if not isinstance(entry, dict):
                raise _err(w, "entry", "not an object")
            file = _require(entry, "file", str, w)
            rng = _range(entry, "samples", w)
            records = _require(entry, "records", int, w)
            if rng.start != at or len(rng) == 0:
                what = (
                    f"gap: samples {at}..{rng.start} are in no shard"
                    if rng.start > at
                    else f"shard {i} ({rng.start}..{rng.stop}) overlaps or is out of order"
                )
                raise _err(mpath, f"shards[{i}]", what)
            if records != len(rng) * self.epochs:
                raise _err(mpath, f"shards[{i}].records", f"{records} is not samples × epochs")
            at = rng.stop
            problem = _shard_file_problem(file, rng)
            if problem:
                raise _err(mpath, f"shards[{i}].file", problem)
            spath = os.path.join(self.path, file)
            if not os.path.exists(spath):
                raise StoreError(f"{self.path}: shard {file} (samples {rng.start}..{rng.stop}) is missing")
            shard = Shard(spath)
            self._check_shard(entry, rng, shard)
            self.shards.append(shard)
        if at != self.samples.stop:
            raise _err(mpath, "shards", f"samples {at}..{self.samples.stop} are in no shard")
        self._starts = [s.start for s in self.shards]
        self._cache: tuple[int, int, tuple] | None = None
        f = m.get("features")
        self.feature_heads: list[dict] = []
        self._feature_codec = None
        if f is not None:
            if not isinstance(f, dict):
                raise _err(mpath, "features", "not an object")
            self._feature_codec = _require(f, "codec", str, f"{mpath}: features")
            if self._feature_codec not in ("q8", "f16"):
                raise _err(mpath, "features.codec", f"unknown codec {self._feature_codec!r}")
            self.feature_heads = _require(f, "heads", list, f"{mpath}: features")
            if not self.feature_heads:
                raise _err(mpath, "features.heads", "no feature head")

    def features(self, head: int = 0) -> FeatureHead:
        """Feature head ``head``, its files opened only now (FORMAT.md 6)."""
        if not self.feature_heads:
            raise StoreError(f"{self.path}: the store holds no features (label it with --feature)")
        if not (0 <= head < len(self.feature_heads)):
            raise StoreError(f"{self.path}: no feature head {head} (the store has "
                             f"{len(self.feature_heads)})")
        return FeatureHead(self, head, self.feature_heads[head], self._feature_codec)

    def _check_shard(self, entry: dict, rng: range, s: Shard) -> None:
        checks = [
            ("samples", f"{rng.start}..{rng.stop}", f"{s.start}..{s.end}"),
            ("epochs", self.epochs, s.epochs),
            ("classes", self.classes, s.classes),
            ("k", self.topk, s.k),
            ("codec", self.codec, s.codec),
            ("chunk_records", self.chunk_records, s.chunk_records),
            ("bytes", entry.get("bytes"), s.size),
            ("checksum", entry.get("checksum"), f"xxh3:{s.index_xxh3:016x}"),
        ]
        for field, want, got in checks:
            if want != got:
                raise _err(
                    s.path,
                    field,
                    f"manifest and shard disagree: manifest says {want}, shard has {got}",
                )

    # -- access ------------------------------------------------------------------------------

    @property
    def records(self) -> int:
        return len(self.samples) * self.epochs

    def __len__(self) -> int:
        return self.records

    def _chunk(self, s: int, c: int) -> tuple:
        if self._cache and self._cache[:2] == (s, c):
            return self._cache[2]
        shard = self.shards[s]
        e = shard.index[c]
        rows = shard.chunk_rows(c)
        where = lambda sample: f"{shard.path}: record (epoch {e.epoch}, sample {sample})"  # noqa: E731
        dec = (e.first,) + _decode_rows(rows, self.classes, self.topk, self.codec, where, e.first)
        self._cache = (s, c, dec)
        return dec

    def record(self, epoch: int, sample: int) -> Record:
        """The record of (``epoch``, ``sample``); the last decoded chunk is kept, so nearby
        samples decode once."""
        if not (0 <= epoch < self.epochs) or sample not in self.samples:
            raise IndexError(
                f"record (epoch {epoch}, sample {sample}) is outside the store (epochs "
                f"0..{self.epochs}, samples {self.samples.start}..{self.samples.stop})"
            )
        s = bisect.bisect_right(self._starts, sample) - 1
        shard = self.shards[s]
        c = shard.by_epoch[epoch][(sample - shard.start) // shard.chunk_records]
        first, aug, idx, logits, tail = self._chunk(s, c)
        r = sample - first
        return Record(
            epoch, sample, _aug_dict(aug[r].tobytes()), idx[r], logits[r], tail[r], self.classes
        )

    def _check_epoch(self, epoch: int) -> None:
        if not (0 <= epoch < self.epochs):
            raise IndexError(f"epoch {epoch} is not in the store (it has {self.epochs})")

    def epoch(self, epoch: int) -> Iterator[Record]:
        """Records of ``epoch`` in sample order, one decoded chunk in memory at a time."""
        self._check_epoch(epoch)
        for s, shard in enumerate(self.shards):
            for c in shard.by_epoch[epoch]:
                first, aug, idx, logits, tail = self._chunk(s, c)
                augs = aug.tolist()
                for r in range(len(idx)):
                    yield Record(
                        epoch, first + r, _aug_dict(augs[r]), idx[r], logits[r], tail[r], self.classes
                    )

    def epoch_arrays(self, epoch: int) -> EpochArrays:
        """All records of ``epoch`` as arrays (each chunk decoded once)."""
        self._check_epoch(epoch)
        parts = []
        for s, shard in enumerate(self.shards):
            for c in shard.by_epoch[epoch]:
                parts.append(self._chunk(s, c)[1:])
        aug, idx, logits, tail = (np.concatenate(p) for p in zip(*parts))
        return EpochArrays(epoch, self.samples, self.classes, aug, idx, logits, tail)

    def quality_sums(self) -> list[float]:
        """The eight quality sums (FORMAT.md 3.3) over all chunk headers, in file and shard order."""
        return _chunk_sums(self.shards)

    def verify(self) -> int:
        """Decodes and checks every chunk and record; returns the number of records checked."""
        n = 0
        for e in range(self.epochs):
            n += len(self.epoch_arrays(e))
        return n

    def close(self) -> None:
        for s in self.shards:
            s.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(path: str | os.PathLike) -> Store:
    """Opens the label store in directory ``path`` (through its manifest.json)."""
    return Store(path)
