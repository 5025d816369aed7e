"""Tests the `distill` extension module (the Rust reader through PyO3) against the pure-Python
reader `distill_store`, record for record, on the stores `test_reader.py` writes; and its errors.

Usage: test_module.py STORES_DIR (the work directory test_reader.py used).
"""

import os
import sys

import numpy as np

import distill
import distill_store as ds


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def box(b) -> list:
    return [-1] * 4 if b is None else [b["x"], b["y"], b["w"], b["h"]]


def compare(path: str) -> int:
    """Every record of every epoch through both readers; returns the records compared."""
    native, pure = distill.Store(path), ds.open_store(path)
    check(native.epochs == pure.epochs and native.classes == pure.classes, path)
    check(native.k == pure.topk and native.samples == (pure.samples.start, pure.samples.stop), path)
    check(len(native) == pure.epochs * len(pure.samples), path)
    check(native.manifest == pure.manifest, f"{path}: manifest")
    start, stop = native.samples
    n = 0
    for e in range(native.epochs):
        r = native.records(e, start, stop)
        a = pure.epoch_arrays(e)
        check(np.array_equal(r["sample"], np.arange(start, stop)), f"{path} e{e}: sample")
        check(np.array_equal(r["indices"], a.indices), f"{path} e{e}: indices")
        check(np.array_equal(r["logits"], a.logits), f"{path} e{e}: logits")
        check(np.array_equal(r["tail"], a.tail), f"{path} e{e}: tail")
        for i in range(len(a)):
            aug = a.aug(i)
            check(r["crop"][i].tolist() == box(aug["crop"]), f"{path} e{e} #{i}: crop")
            check(bool(r["flip"][i]) == aug["flip"], f"{path} e{e} #{i}: flip")
            check(r["cutout"][i].tolist() == box(aug["cutout"]), f"{path} e{e} #{i}: cutout")
            m = aug["mix"]
            if m is None:
                check(r["mix"][i] == 0 and r["partner"][i] == -1, f"{path} e{e} #{i}: mix")
                continue
            check(r["partner"][i] == m["partner"], f"{path} e{e} #{i}: partner")
            check(r["partner_crop"][i].tolist() == box(m["partner_crop"]), f"{path} #{i}")
            check(bool(r["partner_flip"][i]) == m["partner_flip"], f"{path} #{i}: partner_flip")
            if m["kind"]["kind"] == "mixup":
                check(r["mix"][i] == 1, f"{path} #{i}: mixup")
                want = np.float32(m["kind"]["lambda_q"]) / np.float32(65535.0)
                check(r["mixup_lambda"][i] == want, f"{path} #{i}: lambda")
            else:
                check(r["mix"][i] == 2, f"{path} #{i}: cutmix")
                check(r["cutmix_region"][i].tolist() == box(m["kind"]["region"]), f"{path} #{i}")
        for tau in (1.0, 4.0):
            p = native.probs(e, start, stop, tau)
            q = a.probs(tau)
            check(p.dtype == np.float32 and p.shape == q.shape, f"{path}: probs shape")
            check(np.array_equal(p, q), f"{path} e{e}: probs at tau {tau}, max diff {np.abs(p - q).max()}")
        n += len(a)
    rep = native.verify()
    check(rep["records_checked"] == n, f"{path}: verify counted {rep}")
    return n


def expect(fn, exc, *needles: str) -> None:
    try:
        fn()
    except exc as e:
        for w in needles:
            check(w in str(e), f"{w!r} not in {e!r}")
        return
    raise AssertionError(f"no {exc.__name__} raised (wanted {needles})")


def main(argv: list[str]) -> int:
    work = os.path.abspath(argv[1])
    stores = ["q8", "f16", "q8-k1", "q8-k-eq-c", "f16-k-eq-c", "f16-u32-indices", "merged"]
    total = sum(compare(os.path.join(work, s)) for s in stores)
    s = distill.Store(os.path.join(work, "q8"))
    # Bad arguments name themselves.
    expect(lambda: s.records(s.epochs, 0, 1), ValueError, "epoch")
    expect(lambda: s.records(0, 5, 2), ValueError, "start..stop")
    expect(lambda: s.probs(0, 0, 1, 0.0), ValueError, "temperature")
    # Damaged stores raise StoreError (a ValueError), never crash the interpreter.
    check(issubclass(distill.StoreError, ValueError), "StoreError is a ValueError")
    expect(lambda: distill.Store(os.path.join(work, "truncated")), distill.StoreError, "truncated")
    expect(lambda: distill.Store(os.path.join(work, "unfinished")), distill.StoreError, "not finished")
    expect(lambda: distill.Store(os.path.join(work, "nope")), distill.StoreError)
    bad = distill.Store(os.path.join(work, "bad-payload"))
    expect(bad.verify, distill.StoreError, "chunk")
    print(f"OK: {total} records in {len(stores)} stores equal through distill (Rust) and "
          f"distill_store (Python); errors named")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
