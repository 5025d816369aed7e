"""Tests the `distill` extension module (the Rust reader through PyO3) against the pure-Python
reader `distill_store`, record for record, on the stores `test_reader.py` writes; its errors;
`distill.Loader` on stores labelled here (npy digits, a JPEG folder and its WebDataset shards,
teachers trained and exported by distill): ranks, bad arguments, damaged shards, and its batches against
`distill train --stream-digest`'s, bit for bit.

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


def run_distill(distill_bin: str, *args: str) -> None:
    r = subprocess.run([distill_bin, *args], capture_output=True, text=True)
    check(r.returncode == 0, f"distill {' '.join(args)}: {r.stderr}")


def label_with_trained_teacher(distill_bin: str, root: str, data: str, name: str,
                               *label_args: str, size: str | None = None) -> str:
    """Trains an mlp teacher on `data` with distill (1 epoch, hard labels), exports it and labels
    `data` with it (usi, 2 epochs, `label_args`) into root/name; returns the store's path."""
    teacher = os.path.join(root, f"{name}-teacher")
    sized = ["--size", size] if size else []
    run_distill(distill_bin, "train", "--data", data, *sized, "--model", "mlp", "--loss", "ce",
                "--epochs", "1", "--batch", "16", "--test-split", "none", "--out", teacher,
                "--json")
    run_distill(distill_bin, "export", teacher, "--onnx", teacher + ".onnx")
    store = os.path.join(root, name)
    run_distill(distill_bin, "label", "--teacher", teacher + ".onnx", "--data", data, "--aug",
                "usi", "--epochs", "2", *label_args, "--out", store, "--json")
    return store


def batch_digest(b: dict) -> int:
    """`Batch::content_digest` (replay::stream) of a Loader batch, computed here."""
    parts = [b["inputs"].astype("<f4"), b["hard"].astype("<f4")]
    if "teacher" in b:
        parts.append(b["teacher"].astype("<f4"))
    if "features" in b:
        parts.append(b["features"].astype("<f4"))
    parts += [b["samples"].astype("<u4"), b["labels"].astype("<u4")]
    return ds.xxh3_64(b"".join(p.tobytes() for p in parts))


def epoch_digest(loader, epoch: int) -> str:
    """`StreamDigest` of one epoch of `loader`: what `distill train` writes as `stream_xxh3`."""
    loader.set_epoch(epoch)
    words = b"".join(batch_digest(b).to_bytes(8, "little") for b in loader)
    return f"{ds.xxh3_64(words):016x}"


def metrics(run_dir: str) -> list:
    import json
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def jpeg_folder(root: str, classes: int, per: int) -> None:
    """`classes` folders of `per` JPEGs (40x30 and 30x40, quality 90) under root/train/cC."""
    from PIL import Image

    for c in range(classes):
        d = os.path.join(root, "train", f"c{c}")
        os.makedirs(d, exist_ok=True)
        for i in range(per):
            w, h = (40, 30) if i % 2 == 0 else (30, 40)
            y, x = np.mgrid[0:h, 0:w]
            v = ((x * 7 + y * 3 + i * 11) % 64).astype(np.uint8)
            rgb = np.stack([v * 2 + c * 40, v, 255 - v], axis=-1).astype(np.uint8)
            Image.fromarray(rgb).save(os.path.join(d, f"{i:03}.jpg"), quality=90)


def test_train_stream(distill_bin: str, work: str) -> int:
    """Loader batches equal `distill train`'s stream bit for bit: for every epoch trained, the
    digest of the Loader's batches (hashed here, in Python, from the numpy arrays) equals the
    `stream_xxh3` distill train recorded. On a JPEG folder labelled in decode-once blocks
    (block-grouped stream, partners in the block), with and without multi-crop, and on arrays
    labelled per record, and on the folder packed into shuffled tar shards."""
    root = os.path.join(work, "stream")
    shutil.rmtree(root, ignore_errors=True)
    jpegs, digits = os.path.join(root, "jpegs"), os.path.join(root, "digits")
    jpeg_folder(jpegs, 3, 12)
    write_npy_digits(digits, 80)
    # The JPEG folder as WebDataset tar shards (several, so blocks read across files).
    shards = os.path.join(root, "shards")
    run_distill(distill_bin, "data", "pack-wds", jpegs, shards, "--shard-size", "16K",
                "--shuffle-seed", "3")

    def run(*args: str) -> None:
        run_distill(distill_bin, *args)

    compared = 0
    for name, data, size, block in [("jpegs", jpegs, "16", "8"), ("digits", digits, "12", "0"),
                                    ("shards", shards, "16", "8")]:
        store = label_with_trained_teacher(distill_bin, root, data, f"{name}-store", "--topk",
                                           "2", "--block", block, size=size)
        blocks = distill.Store(store).manifest.get("blocks")
        check((blocks is not None) == (block != "0"), f"{name}: blocks {blocks}")
        for multi_crop, window in [(1, 2), (2, 1)] if name == "jpegs" else [(1, 2)]:
            student = os.path.join(root, f"{name}-student-{multi_crop}")
            run("train", "--data", data, "--labels", store, "--model", "mlp", "--loss", "kd",
                "--temperature", "3", "--epochs", "3", "--batch", "5", "--seed", "11",
                "--threads", "2", "--multi-crop", str(multi_crop), "--shuffle-window",
                str(window), "--stream-digest", "--test-split", "none", "--out", student,
                "--json")
            trained = [m["stream_xxh3"] for m in metrics(student)]
            check(len(trained) == 3, f"{name}: three epochs in metrics.jsonl")
            loader = distill.Loader(store, data, 5, seed=11, temperature=3.0, threads=1,
                                    multi_crop=multi_crop, shuffle_window=window)
            replayed = [epoch_digest(loader, e) for e in range(3)]
            check(replayed == trained, f"{name}, multi_crop {multi_crop}: Loader digests "
                  f"{replayed} != distill train's {trained}")
            check(len(set(trained)) == 3, f"{name}: every epoch its own batches")
            # The digest sees every value: another seed, temperature or normalization differs.
            for other in [dict(seed=12), dict(temperature=2.0), dict(mean=[0.4] * 3
                          if name != "digits" else [0.4])]:
                kw = dict(seed=11, temperature=3.0, multi_crop=multi_crop, shuffle_window=window)
                kw.update(other)
                d = epoch_digest(distill.Loader(store, data, 5, threads=1, **kw), 0)
                check(d != trained[0], f"{name}: {other} changes the digest")
            compared += 3 * len(loader)
    return compared


def test_loader(distill_bin: str, work: str) -> int:
    root = os.path.join(work, "loader")
    shutil.rmtree(root, ignore_errors=True)
    data, other = os.path.join(root, "data"), os.path.join(root, "other")
    labels = write_npy_digits(data, 96)
    write_npy_digits(other, 96, flip_label=True)

    store_dir = label_with_trained_teacher(distill_bin, root, data, "store", "--topk", "3")
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
    expect(lambda: distill.Loader(store, data, 8, multi_crop=3), ValueError, "multi_crop")
    expect(lambda: store.view(0, 96, data), distill.StoreError, "96")
    expect(lambda: store.view(0, 0, other), distill.StoreError, "dataset")
    # pixels=True: u8 pixels (and a mixup's partner and λ) from which the documented f32
    # operations, done here in numpy, give the f32 Loader's inputs bit for bit.
    mean, std = [0.3], [0.6]
    f32 = epoch_of(distill.Loader(store, data, 16, seed=3, mean=mean, std=std, threads=1), 1)
    u8 = epoch_of(distill.Loader(store, data, 16, seed=3, mean=mean, std=std, threads=1,
                                 pixels=True), 1)
    mixed = 0
    store_epoch = distill.Loader(store, data, 16, seed=3).store_epoch(1)
    for a, b in zip(f32, u8):
        check("inputs" not in b and b["pixels"].dtype == np.uint8, "u8 pixels")
        x = b["pixels"].astype(np.float32) / np.float32(255)
        if "partner" in b:
            mixed += int((b["lambda"] < 1).sum())
            lam, rest = b["lambda"][:, None, None, None], b["rest"][:, None, None, None]
            x = x * lam + (b["partner"].astype(np.float32) / np.float32(255)) * rest
        # Store.view: the pixels each record replays to (a mixup's blend rounded to u8).
        for i, s in enumerate(b["samples"][:4]):
            want = np.clip(np.rint(x[i, 0] * np.float32(255)), 0, 255).astype(np.uint8)
            got = store.view(store_epoch, int(s), data)
            check(got.shape == (12, 12) and np.array_equal(got, want), f"view of sample {s}")
        inv = np.float32(1) / np.array(std, np.float32)
        x = (x - np.array(mean, np.float32)[None, :, None, None]) * inv[None, :, None, None]
        check(x.dtype == np.float32 and np.array_equal(x.view(np.uint32),
                                                       a["inputs"].view(np.uint32)),
              "u8 pixels finished as documented equal the f32 inputs bit for bit")
        check(np.array_equal(a["hard"], b["hard"]), "same labels")
    check(mixed > 0, "some mixups among the u8 batches")
    # A shard damaged after the store was finished: iterating raises StoreError naming the
    # shard and chunk (the interpreter lives on).
    bad = os.path.join(root, "bad-store")
    shutil.copytree(store_dir, bad)
    shard = next(os.path.join(bad, f) for f in sorted(os.listdir(bad)) if f.endswith(".dls"))
    with open(shard, "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0x40]))
    damaged = distill.Loader(bad, data, 16, threads=1)
    expect(lambda: list(damaged), distill.StoreError, "chunk", os.path.basename(shard))
    return 96 * 2


def test_unlabelled_loader(distill_bin: str, work: str) -> int:
    """A store labelled from data read without hard labels (`--unlabelled`): format version 4,
    read alike by both readers; its Loader batches have `hard = None` and `labels = None` and
    the teacher rows of the store; the same data read with its labels is refused."""
    root = os.path.join(work, "unlabelled")
    shutil.rmtree(root, ignore_errors=True)
    data = os.path.join(root, "data")
    write_npy_digits(data, 48)
    store_dir = label_with_trained_teacher(distill_bin, root, data, "store", "--topk", "3",
                                           "--unlabelled")
    pure = ds.open_store(store_dir)
    check(pure.manifest["format_version"] == 4 and pure.labelled is False,
          f"version 4, no hard labels: {pure.manifest['format_version']}, {pure.labelled}")
    n = compare(store_dir)
    store = distill.Store(store_dir)
    loader = distill.Loader(store, data, 16, seed=1, temperature=2.0, threads=1)
    probs = store.probs(0, 0, 48, 2.0)
    seen = 0
    for b in loader:
        check(b["hard"] is None and b["labels"] is None, "no hard labels in the batch")
        check(np.array_equal(b["teacher"], probs[b["samples"]]), "teacher rows of the store")
        seen += len(b["samples"])
    check(seen == 48, f"one epoch: {seen}")
    expect(lambda: distill.Loader(store, data, 16, unlabelled=False), distill.StoreError,
           "dataset.labelled")
    # A labelled split and these digits unlabelled, in one store: a list of two paths; rows of
    # unlabelled samples (or mixed with one) are marked, their hard rows zero.
    labelled = os.path.join(root, "labelled")
    truth = write_npy_digits(labelled, 48)
    teacher = os.path.join(root, "store-teacher.onnx")
    both = os.path.join(root, "both")
    run_distill(distill_bin, "label", "--teacher", teacher, "--data", labelled, "--data", data,
                "--unlabelled", "--aug", "usi", "--epochs", "1", "--topk", "3", "--out", both,
                "--json")
    n += compare(both)
    marked = 0
    for b in distill.Loader(both, [labelled, data], 16, seed=1, threads=1):
        rows = b.get("labelled", np.ones(len(b["samples"]), bool))
        check(np.array_equal(rows, b["hard"].sum(axis=1) > 0.5), "labelled rows have hard labels")
        check(not rows[b["samples"] >= 48].any(), "unlabelled samples have none")
        own = b["samples"] < 48
        check(np.array_equal(b["labels"][own], truth[b["samples"][own]]), "labels of the split")
        marked += int((~rows).sum())
    check(marked >= 48, f"rows without hard labels marked: {marked}")
    expect(lambda: distill.Loader(both, labelled, 16), ValueError, "from 2 datasets")
    return n


def test_feature_loader(distill_bin: str, work: str) -> int:
    """A student exported with its penultimate features (`export --feature-output`) labels the
    digits with `--feature`: the Loader's `features` (`features=0`) equal `Store.features` of
    each batch's samples, and with them in the digest the Loader's batches equal `distill train
    --feature-weight`'s stream bit for bit."""
    root = os.path.join(work, "features")
    shutil.rmtree(root, ignore_errors=True)
    digits = os.path.join(root, "digits")
    write_npy_digits(digits, 60)
    teacher = os.path.join(root, "teacher")
    run_distill(distill_bin, "train", "--data", digits, "--model", "mlp", "--width", "0.125",
                "--loss", "ce", "--epochs", "1", "--batch", "16", "--test-split", "none", "--out",
                teacher, "--json")
    run_distill(distill_bin, "export", teacher, "--onnx", teacher + ".onnx", "--feature-output",
                "embedding")
    store = os.path.join(root, "store")
    run_distill(distill_bin, "label", "--teacher", teacher + ".onnx", "--data", digits, "--aug",
                "usi", "--epochs", "2", "--topk", "3", "--feature", "embedding", "--out", store,
                "--json")
    st = distill.Store(store)
    heads = st.manifest["features"]["heads"]
    check(len(heads) == 1 and heads[0]["output"] == "embedding", f"heads {heads}")
    dim = heads[0]["stored_dim"]
    loader = distill.Loader(store, digits, 7, seed=3, temperature=4.0, threads=1, features=0)
    rows = 0
    for epoch in range(2):
        loader.set_epoch(epoch)
        want = st.features(loader.store_epoch(epoch), 0, 60, 0)
        for b in loader:
            f = b["features"]
            check(f.dtype == np.float32 and f.shape == (b["samples"].shape[0], dim), "shape")
            check(np.array_equal(f, want[b["samples"]]), "Loader features equal Store.features")
            check(float(np.abs(f).max()) > 0.0, "features carry something")
            rows += f.shape[0]
    # The pure-Python reader (FORMAT.md 6, no Rust) decodes the same vectors, and its sums of the
    # chunks' reconstruction figures give the manifest's.
    py = ds.Store(store)
    head = py.features(0)
    for epoch in range(2):
        check(np.array_equal(head.epoch(epoch), st.features(epoch, 0, 60, 0)),
              f"epoch {epoch}: distill_store features equal distill.Store's")
    sums = head.quality_sums()
    q = heads[0]["quality"]
    check(sums[0] == q["records"] == 120, f"records {sums[0]}")
    check(abs(sums[1] / sums[0] - q["mean_cosine"]) < 1e-12, "mean cosine from the sums")
    check(q["mean_cosine"] > 0.999, f"q8 reconstruction {q}")
    expect(lambda: py.features(1), ds.StoreError, "no feature head 1")
    plain = distill.Loader(store, digits, 7, seed=3, temperature=4.0, threads=1)
    check("features" not in next(iter(plain)), "no features unless asked")
    expect(lambda: distill.Loader(store, digits, 7, features=1), distill.StoreError,
           "no feature head 1")
    student = os.path.join(root, "student")
    run_distill(distill_bin, "train", "--data", digits, "--labels", store, "--model", "mlp",
                "--loss", "kd", "--temperature", "4", "--feature-weight", "0.5", "--epochs", "2",
                "--batch", "7", "--seed", "3", "--threads", "2", "--stream-digest",
                "--test-split", "none", "--out", student, "--json")
    trained = [m["stream_xxh3"] for m in metrics(student)]
    replayed = [epoch_digest(loader, e) for e in range(2)]
    check(replayed == trained, f"feature Loader digests {replayed} != distill train's {trained}")
    rows += embedding_only(distill_bin, root, digits, store, teacher + ".onnx")
    return rows


def embedding_only(distill_bin: str, root: str, digits: str, store: str, onnx: str) -> int:
    """The same teacher read as embedding-only (`--logits none`): a store of views and features
    without soft labels (format version 6), whose Loader batches are the labelled store's less
    the teacher distribution, and which both readers read."""
    views = os.path.join(root, "views")
    run_distill(distill_bin, "label", "--teacher", onnx, "--data", digits, "--aug", "usi",
                "--epochs", "2", "--logits", "none", "--feature", "embedding", "--out", views,
                "--json")
    st = distill.Store(views)
    check((st.classes, st.k, st.manifest["format_version"]) == (0, 0, 6), f"{st}")
    expect(lambda: st.probs(0, 0, 4), distill.StoreError, "no soft labels")
    a = distill.Loader(store, digits, 7, seed=3, temperature=4.0, threads=1, features=0)
    b = distill.Loader(views, digits, 7, seed=3, temperature=4.0, threads=1, features=0)
    rows = 0
    for epoch in range(2):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for x, y in zip(a, b, strict=True):
            check("teacher" in x and "teacher" not in y, "no teacher distribution without labels")
            for key in ("inputs", "hard", "labels", "samples", "features"):
                check(np.array_equal(x[key], y[key]), f"epoch {epoch}: {key} differ")
            rows += y["samples"].shape[0]
    py, labelled = ds.Store(views), ds.Store(store)
    check(not py.has_labels and labelled.has_labels, "has_labels")
    for sample in (0, 17, 59):
        r, want = py.record(1, sample), labelled.record(1, sample)
        check(r.aug == want.aug and r.k == 0, f"sample {sample}: the labelled store's view")
    expect(lambda: py.record(0, 0).probs(1.0), ds.StoreError, "no soft labels")
    check(np.array_equal(py.features(0).epoch(1), labelled.features(0).epoch(1)),
          "the labelled store's features")
    return rows


def main(argv: list[str]) -> int:
    # `import distill` never imports torch; distill.torch does (and needs it).
    check("torch" not in sys.modules, "import distill imported torch")
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
    batches = test_train_stream(os.path.abspath(argv[2]), work)
    total += test_unlabelled_loader(os.path.abspath(argv[2]), work)
    total += test_feature_loader(os.path.abspath(argv[2]), work)
    print(f"OK: {total} records in {len(stores)} stores equal through distill (Rust) and "
          f"distill_store (Python); errors named; Loader replayed {replayed} records, teacher rows "
          f"equal to Store.probs, ranks disjoint; {batches} Loader batches equal distill train's "
          f"stream bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
