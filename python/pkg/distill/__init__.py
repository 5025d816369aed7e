"""distill label stores from Python.

`Store` opens a finished store (the Rust reader, through the `_native` extension): its manifest,
records as numpy arrays and teacher distributions at any temperature. `Loader` replays a store on
its data exactly as `distill train` does (the same Rust stream) and yields batches of numpy
arrays, split between DDP ranks. `resized_crop` and `center_crop` resize numpy pixels exactly as
Pillow does (torchvision's `RandomResizedCrop` / `Resize` + `CenterCrop` on PIL images): the same
code that makes a teacher's inputs. Errors are `StoreError`
(a `ValueError`) naming the file, field, shard or chunk.
"""

from ._native import Loader, Store, StoreError, center_crop, decode_image, resized_crop

__all__ = ["Loader", "Store", "StoreError", "center_crop", "decode_image", "resized_crop"]
