"""Tests the `distill` extension module (the Rust reader through PyO3) against the pure-Python
reader `distill_store`, record for record, on the stores `test_reader.py` writes; its errors; and
`distill.Loader` on a store labelled here (npy digits, a teacher trained and exported by distill).

Usage: test_module.py STORES_DIR DISTILL (the work directory test_reader.py used, the binary).
"""

import os
import shutil
import subprocess
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


def write_npy_digits(d: str, n: int, flip_label: bool = False) -> np.ndarray:
    """Four classes of 12x12 images (class c lights row 3c and column 3c), as npy files."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = (np.arange(n) * 7 % 4).astype(np.uint8)
    img = rng.integers(0, 60, (n, 12, 12)).astype(np.uint8)
    for i, c in enumerate(labels):
        img[i, 3 * c, :] = 220
        img[i, :, 3 * c] = 220
    if flip_label:
        labels[5] = (labels[5] + 1) % 4
    np.save(os.path.join(d, "train_images.npy"), img)
    np.save(os.path.join(d, "train_labels.npy"), labels)
    return labels


def test_loader(distill_bin: str, work: str) -> int:
    root = os.path.join(work, "loader")
    shutil.rmtree(root, ignore_errors=True)
    data, other = os.path.join(root, "data"), os.path.join(root, "other")
    labels = write_npy_digits(data, 96)
    write_npy_digits(other, 96, flip_label=True)

    def run(*args: str) -> None:
        r = subprocess.run([distill_bin, *args], capture_output=True, text=True)
        check(r.returncode == 0, f"distill {' '.join(args)}: {r.stderr}")

    run("train", "--data", data, "--model", "mlp", "--loss", "ce", "--epochs", "1", "--batch",
        "32", "--test-split", "none", "--out", os.path.join(root, "teacher"), "--json")
    run("export", os.path.join(root, "teacher"), "--onnx", os.path.join(root, "t.onnx"))
    store_dir = os.path.join(root, "store")
    run("label", "--teacher", os.path.join(root, "t.onnx"), "--data", data, "--aug", "usi",
        "--epochs", "2", "--topk", "3", "--out", store_dir, "--json")
    store = distill.Store(store_dir)

    def epoch_of(loader, e):
        loader.set_epoch(e)
        return [b for b in loader]

    loader = distill.Loader(store, data, 16, seed=3, temperature=2.0, threads=2)
    check(len(loader) == 6, f"batches per epoch: {len(loader)}")
    seen = {}
    for e in (0, 1):
        batches = epoch_of(loader, e)
        check(len(batches) == 6, "six batches")
        samples = np.concatenate([b["samples"] for b in batches])
        check(sorted(samples.tolist()) == list(range(96)), f"epoch {e}: each sample once")
        probs = store.probs(e % store.epochs, 0, 96, 2.0)
        for b in batches:
            n = len(b["samples"])
            check(b["inputs"].dtype == np.float32 and b["inputs"].shape == (n, 1, 12, 12), "inputs")
            check(np.array_equal(b["teacher"], probs[b["samples"]]), f"epoch {e}: teacher rows")
            check(np.allclose(b["hard"].sum(axis=1), 1.0, atol=1e-5), "hard labels sum to 1")
            check(np.array_equal(b["labels"], labels[b["samples"]]), "ground truth labels")
        seen[e] = samples
        check(loader.images_decoded >= 96, "decodes counted")
    check(not np.array_equal(seen[0], seen[1]), "another epoch, another order")
    # A second loader with the same arguments gives the same batches, bit for bit.
    again = epoch_of(distill.Loader(store_dir, data, 16, seed=3, temperature=2.0, threads=1), 1)
    first = epoch_of(loader, 1)
    check(all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, again)), "repeatable")
    # Two ranks: disjoint halves of the same order.
    parts = [np.concatenate([b["samples"] for b in epoch_of(
        distill.Loader(store, data, 16, seed=3, rank=r, world_size=2, threads=1), 1)])
        for r in range(2)]
    check(len(set(parts[0]) & set(parts[1])) == 0, "ranks are disjoint")
    check(np.array_equal(np.concatenate(parts), seen[1]), "ranks cover the epoch in its order")
    # Bad arguments are ValueErrors naming the argument; other data is refused naming the field.
    expect(lambda: distill.Loader(store, data, 0), ValueError, "batch_size")
    expect(lambda: distill.Loader(store, data, 8, rank=2, world_size=2), ValueError, "rank")
    expect(lambda: distill.Loader(store, data, 8, mean=[0.5, 0.5]), ValueError, "mean")
    expect(lambda: distill.Loader(store, data, 8, temperature=0.0), ValueError, "temperature")
    expect(lambda: distill.Loader(store, other, 8), distill.StoreError, "dataset")
    return 96 * 2


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
    replayed = test_loader(os.path.abspath(argv[2]), work)
    print(f"OK: {total} records in {len(stores)} stores equal through distill (Rust) and "
          f"distill_store (Python); errors named; Loader replayed {replayed} records, teacher rows "
          f"equal to Store.probs, ranks disjoint")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
