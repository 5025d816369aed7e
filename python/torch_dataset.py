"""Example: a PyTorch ``Dataset`` pairing a distill label store with the MNIST IDX images it was
labelled from.

Each item is ``(image, soft_label, aug)``:

* ``image``: the **un-augmented** source image as a float32 tensor (1, H, W) scaled to [0, 1]
  (``v / 255``, FORMAT.md 4.1 step 3; no mean/std normalization);
* ``soft_label``: the teacher distribution rebuilt at temperature ``tau`` over all classes
  (float32 tensor, FORMAT.md 5);
* ``aug``: the record's augmentation parameters as a dict (see ``distill_store.decode_aug``).

Replaying the augmentation in Python (crop/resize, flip, mixup/cutmix with the partner image,
cutout; FORMAT.md 4.1 "Replaying the pixels") is **not implemented** here: the image returned is
the plain source image and the soft label is the one the teacher gave the *augmented* image, so
training on these pairs as they are is only right for records without augmentation. A user who
needs augmented inputs must replay ``aug`` themselves following FORMAT.md (or train with
``distill``'s own student, which does).

torch is imported lazily, when a dataset is created; ``distill_store`` needs only numpy and
zstandard.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

import distill_store


def _read(path: str) -> bytes:
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            with (gzip.open if p.endswith(".gz") else open)(p, "rb") as f:
                return f.read()
    raise FileNotFoundError(f"{path}: missing (looked for it with and without .gz)")


def read_idx(path: str, dims: int) -> np.ndarray:
    """A u8 IDX file (optionally gzipped) as an array of ``dims`` dimensions."""
    b = _read(path)
    if len(b) < 4 + 4 * dims or b[0] != 0 or b[1] != 0 or b[2] != 0x08 or b[3] != dims:
        raise ValueError(f"{path}: not a u8 IDX file with {dims} dimensions")
    shape = tuple(int.from_bytes(b[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(b, np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: IDX dimensions {shape} do not match its size (truncated?)")
    return data.reshape(shape)


class StoreMnistPairs:
    """Records of one epoch of a store, paired with the MNIST images of directory ``data_dir``
    (``train-images-idx3-ubyte`` / ``t10k-…``, optionally ``.gz``; the split is the store's).
    Use :func:`StoreMnistDataset` for the same as a ``torch.utils.data.Dataset``.

    ``check_fingerprint`` compares the images and labels with the store's dataset fingerprint
    (xxh3 of the pixels and of the labels as u32), as distill does, so labels never get paired
    with the wrong images. Call :meth:`set_epoch` to move to another stored epoch."""

    def __init__(self, store_dir: str, data_dir: str, epoch: int = 0, tau: float = 1.0,
                 check_fingerprint: bool = True):
        import torch  # lazy: only the dataset needs it

        self._torch = torch
        self.store = distill_store.open_store(store_dir)
        fp = self.store.manifest["dataset"]
        if fp.get("format") != "mnist-idx":
            raise ValueError(f"{store_dir}: labels a {fp.get('format')!r} dataset, not mnist-idx")
        prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}[fp["split"]]
        self.images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte"), 3)
        labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte"), 1)
        if check_fingerprint:
            got = {
                "samples": len(labels),
                "labels_xxh3": f"{distill_store.xxh3_64(labels.astype('<u4').tobytes()):016x}",
                "content_xxh3": f"{distill_store.xxh3_64(self.images.tobytes()):016x}",
            }
            for key, value in got.items():
                if fp[key] != value:
                    raise ValueError(
                        f"dataset.{key} differs: the store has {fp[key]}, the data has {value}"
                    )
        self.tau = tau
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Selects the stored epoch (augmented copy) whose labels are returned."""
        self.epoch = epoch
        self._labels = self.store.epoch_arrays(epoch)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int):
        torch = self._torch
        rec = self._labels.record(i)
        image = torch.from_numpy(self.images[rec.sample].astype(np.float32) / np.float32(255.0))
        return image.unsqueeze(0), torch.from_numpy(rec.probs(self.tau)), rec.aug


_DATASET_CLASS = None


def StoreMnistDataset(store_dir: str, data_dir: str, epoch: int = 0, tau: float = 1.0,
                      check_fingerprint: bool = True):
    """A ``torch.utils.data.Dataset`` of ``(image, soft_label, aug)`` (see the module docs).

    ``aug`` holds ``None`` values, which torch's default collate cannot batch: give a
    ``DataLoader`` a ``collate_fn`` that keeps the aug dicts as a list, or drop them."""
    global _DATASET_CLASS
    if _DATASET_CLASS is None:
        import torch.utils.data

        _DATASET_CLASS = type("StoreMnistDataset", (StoreMnistPairs, torch.utils.data.Dataset), {})
    return _DATASET_CLASS(store_dir, data_dir, epoch, tau, check_fingerprint)
