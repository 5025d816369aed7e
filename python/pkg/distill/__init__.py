"""distill label stores from Python.

`Store` opens a finished store (the Rust reader, through the `_native` extension): its manifest,
records as numpy arrays and teacher distributions at any temperature. Errors are `StoreError`
(a `ValueError`) naming the file, field, shard or chunk.
"""

from ._native import Store, StoreError

__all__ = ["Store", "StoreError"]
