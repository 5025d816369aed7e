"""distill label stores from Python.

`Store` opens a finished store (the Rust reader, through the `_native` extension): its manifest,
records as numpy arrays and teacher distributions at any temperature. `Loader` replays a store on
its data exactly as `distill train` does (the same Rust stream) and yields batches of numpy
arrays, split between DDP ranks. Errors are `StoreError`
(a `ValueError`) naming the file, field, shard or chunk.
"""

from ._native import Loader, Store, StoreError

__all__ = ["Loader", "Store", "StoreError"]
