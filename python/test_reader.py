"""Checks the Python reader against `distill inspect`, record for record.

    python3 python/test_reader.py DISTILL_BIN SYNTH_BIN WORKDIR

Writes small stores with the synth example (q8 and f16, several chunks per epoch, k = C, k = 1,
u32 class indices, and a two-shard store made by splitting one and joining the parts with
`distill merge`), then for every record of every epoch compares indices, aug params, logits,
tail logits and the probabilities at tau = 1, 4 and 2.5 with what `distill inspect --json`
prints. Also checks the xxh3 implementation, the aug-params codec, and that damaged stores raise
clear errors. Exits nonzero on the first failure; prints one summary line on success.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distill_store as ds  # noqa: E402

TOL = 1e-6
TAUS = [1.0, 4.0, 2.5]


class Failure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def run(*args: str) -> str:
    p = subprocess.run(list(args), capture_output=True, text=True)
    if p.returncode != 0:
        raise Failure(f"{' '.join(args)} exited {p.returncode}:\n{p.stderr}")
    return p.stdout


# ---------------------------------------------------------------------------------------------
# Pieces that need no binary
# ---------------------------------------------------------------------------------------------

# xxh3-64 (seed 0) of bytes((i*7+3) % 256 for i in range(n)), from the reference C library
# (python-xxhash 4.1.0): one length in every branch of the algorithm.
XXH3_VECTORS = {
    0: 0x2D06800538D394C2,
    1: 0x13E608BC156DEFED,
    3: 0xA9088DDA485B481C,
    4: 0x6D9253B16C8B1ED3,
    8: 0x60539DB630471163,
    9: 0xFEFF668361D723A8,
    16: 0xB8C859B0F030B585,
    17: 0x714A04408E79B80F,
    128: 0x67425A03650261BF,
    129: 0xC664BF3311C6ABC4,
    240: 0x64556DC6B462A6CF,
    241: 0x8BEADD3A8874FE17,
    1024: 0x9B81661C641C72B1,
    1025: 0x806C2072ED713576,
    3000: 0xC89178BB873C6B3D,
}


def test_xxh3() -> None:
    # The reader's checksum is xxh3-64 with seed 0 (not xxh64, not another seed), over bytes of
    # any buffer type; the stores distill writes (xxhash-rust) are the cross-check of the rest.
    for n, want in XXH3_VECTORS.items():
        b = bytes((i * 7 + 3) % 256 for i in range(n))
        for buf in (b, bytearray(b), memoryview(b)):
            got = ds.xxh3_64(buf)
            check(got == want, f"xxh3 of {n} bytes: {got:016x}, expected {want:016x}")


def box(x, y, w, h) -> bytes:
    return b"".join(v.to_bytes(2, "little") for v in (x, y, w, h))


def test_aug_codec() -> None:
    b = bytearray(39)
    check(ds.decode_aug(bytes(b)) == {"crop": None, "flip": False, "cutout": None, "mix": None}, "empty aug")
    # crop + cutout + mixup without partner crop, partner flipped
    b = bytearray(39)
    b[0] = 1 | 2 | 4 | 8 | 64
    b[1:9] = box(3, 4, 200, 180)
    b[9:17] = box(10, 11, 12, 13)
    b[17:21] = (123456).to_bytes(4, "little")
    b[29:31] = (40000).to_bytes(2, "little")
    want = {
        "crop": {"x": 3, "y": 4, "w": 200, "h": 180},
        "flip": True,
        "cutout": {"x": 10, "y": 11, "w": 12, "h": 13},
        "mix": {
            "partner": 123456,
            "partner_crop": None,
            "partner_flip": True,
            "kind": {"kind": "mixup", "lambda_q": 40000},
        },
    }
    check(ds.decode_aug(bytes(b)) == want, f"mixup aug: {ds.decode_aug(bytes(b))}")
    check(abs(ds.mix_primary_weight(want, 10, 10) - 40000 / 65535) < 1e-6, "mixup weight")
    # cutmix with partner crop (FORMAT.md's round-trip example: flags 0b0111_0111)
    b = bytearray(39)
    b[0] = 0b0111_0111
    b[1:9] = box(3, 4, 200, 180)
    b[9:17] = box(10, 11, 12, 13)
    b[17:21] = (123456).to_bytes(4, "little")
    b[21:29] = box(1, 2, 300, 301)
    b[31:39] = box(0, 0, 5, 4)
    a = ds.decode_aug(bytes(b))
    check(a["mix"]["kind"] == {"kind": "cutmix", "region": {"x": 0, "y": 0, "w": 5, "h": 4}}, "cutmix")
    check(a["mix"]["partner_crop"] == {"x": 1, "y": 2, "w": 300, "h": 301}, "partner crop")
    check(abs(ds.mix_primary_weight(a, 10, 10) - 0.8) < 1e-6, "cutmix weight")
    bad_cases = [
        ({0: 0x80}, "aug.flags"),  # reserved bit
        ({0: 8 | 16}, "aug.flags"),  # mixup and cutmix
        ({0: 32}, "aug.flags"),  # partner crop without mix
        ({5: 1}, "aug.crop"),  # crop bytes without flag
        ({0: 8, 33: 1}, "aug.cutmix"),  # cutmix bytes under mixup
        ({0: 16, 31 + 4: 1, 29: 1}, "aug.lambda"),  # lambda under cutmix
        ({18: 1}, "aug.partner"),  # partner without mix
    ]
    for sets, field in bad_cases:
        b = bytearray(39)
        for i, v in sets.items():
            b[i] = v
        try:
            ds.decode_aug(bytes(b))
        except ds.StoreError as e:
            check(field in str(e), f"aug error {sets} names {field}: {e}")
        else:
            raise Failure(f"aug bytes {sets} were accepted")
    try:
        ds.decode_aug(bytes(10))
    except ds.StoreError:
        pass
    else:
        raise Failure("10 aug bytes were accepted")


# ---------------------------------------------------------------------------------------------
# Comparison with distill inspect
# ---------------------------------------------------------------------------------------------


class Stats:
    records = 0
    values = 0
    exact = 0
    max_diff = 0.0


def close(a: float, b: float, what: str) -> None:
    d = abs(float(a) - float(b))
    Stats.values += 1
    Stats.exact += np.float32(a) == np.float32(b)
    Stats.max_diff = max(Stats.max_diff, d)
    check(d <= TOL, f"{what}: python {a!r} vs distill {b!r}")


def compare_store(distill: str, path: str) -> None:
    store = ds.open_store(path)
    n = len(store.samples)
    hist = np.zeros(store.classes, dtype=np.int64)
    summary = None
    for e in range(store.epochs):
        by_iter = list(store.epoch(e))
        arrays = store.epoch_arrays(e)
        check(len(by_iter) == n == len(arrays), f"{path}: epoch {e} has {len(by_iter)} records")
        hist += np.bincount(arrays.indices[:, 0], minlength=store.classes)
        for tau in TAUS:
            out = json.loads(
                run(
                    distill, "inspect", path, "--records", f"0..{n}", "--epoch", str(e),
                    "--temperature", str(tau), "--json",
                )
            )
            summary = out
            dump = out["dump"]
            check(len(dump) == n, f"{path}: inspect dumped {len(dump)} of {n} records")
            dense = arrays.probs(tau)
            for i, (j, rec) in enumerate(zip(dump, by_iter)):
                where = f"{path} epoch {e} sample {rec.sample} tau {tau}"
                check(j["epoch"] == e and j["sample"] == rec.sample, f"{where}: key {j['epoch']},{j['sample']}")
                check(j["classes"] == rec.indices.tolist(), f"{where}: indices {rec.indices} vs {j['classes']}")
                check(j["aug"] == rec.aug, f"{where}: aug {rec.aug} vs {j['aug']}")
                check(len(j["logits"]) == store.topk, f"{where}: {len(j['logits'])} logits")
                for a, b in zip(rec.logits.tolist(), j["logits"]):
                    close(a, b, f"{where}: logit")
                for a, b in zip(rec.tail.tolist(), j["tail_logits"]):
                    close(a, b, f"{where}: tail logit")
                check(j["tail_classes"] == store.classes - store.topk, f"{where}: tail_classes")
                check(abs(j["temperature"] - tau) < 1e-6, f"{where}: temperature")
                top, each = rec.top_probs(tau)
                p = rec.probs(tau)
                check(p.shape == (store.classes,) and p.dtype == np.float32, f"{where}: probs shape")
                check(abs(float(p.sum(dtype=np.float64)) - 1.0) < 1e-5, f"{where}: probs sum {p.sum()}")
                for c, a, b in zip(rec.indices.tolist(), top.tolist(), j["probabilities"]):
                    close(a, b, f"{where}: probability of class {c}")
                    close(p[c], b, f"{where}: probs()[{c}]")
                    check(abs(float(dense[i, c]) - b) <= TOL, f"{where}: dense probs [{c}]")
                close(each, j["tail_probability_each"], f"{where}: tail probability")
                mask = np.ones(store.classes, dtype=bool)
                mask[rec.indices] = False
                if mask.any():
                    others = p[mask]
                    check(np.all(others == others[0]), f"{where}: tail classes differ")
                    close(others[0], j["tail_probability_each"], f"{where}: probs() tail")
                    check(np.all(np.abs(dense[i][mask] - j["tail_probability_each"]) <= TOL), f"{where}: dense tail")
                Stats.records += tau == TAUS[0]
        # random access agrees with iteration
        for s in [store.samples.start, store.samples.stop - 1, store.samples.start + n // 2]:
            r, it = store.record(e, s), by_iter[s - store.samples.start]
            check(
                r.aug == it.aug
                and np.array_equal(r.indices, it.indices)
                and np.array_equal(r.logits, it.logits)
                and np.array_equal(r.tail, it.tail),
                f"{path}: record({e}, {s}) differs from epoch iteration",
            )
    check(hist.tolist() == summary["top1_histogram"], f"{path}: top-1 histogram differs from inspect's")
    sums = store.quality_sums()
    check(int(sums[0]) == store.records == summary["records"], f"{path}: quality records {sums[0]}")
    check(abs(sums[1] / sums[0] - summary["quality"]["mean_top_k_mass"]) < 1e-9, f"{path}: mean top-k mass")
    store.close()


# ---------------------------------------------------------------------------------------------
# A two-shard store: split one shard at a chunk boundary, join the parts with `distill merge`
# ---------------------------------------------------------------------------------------------


def write_part(src: ds.Shard, manifest: dict, start: int, end: int, out_dir: str) -> None:
    """A one-shard store of samples [start, end) made of src's chunks (copied verbatim)."""
    os.makedirs(out_dir)
    name = f"shard-{start:010d}-{end:010d}.dls"
    with open(src.path, "rb") as f:
        data = f.read()
    body = bytearray(ds.FILE_MAGIC + (1).to_bytes(4, "little") + bytes(4))
    index = bytearray()
    for e in src.index:  # file order
        if not (start <= e.first < end):
            continue
        check(e.first + e.count <= end, "split point is not a chunk boundary")
        offset = len(body)
        body += data[e.offset : e.offset + ds.CHUNK_HEADER_BYTES + e.payload_len]
        for v, w in [
            (e.epoch, 4), (e.first, 4), (e.count, 4), (e.raw_len, 4), (offset, 8),
            (e.payload_len, 4), (0, 4), (e.payload_xxh3, 8),
        ]:
            index += v.to_bytes(w, "little")
    chunks = len(index) // ds.INDEX_ENTRY_BYTES
    index_xxh3 = ds.xxh3_64(bytes(index))
    footer = bytearray(80)
    footer[0:8] = len(body).to_bytes(8, "little")
    for at, v in [
        (8, chunks), (12, src.epochs), (16, start), (20, end), (24, src.classes), (28, src.k),
        (32, src.chunk_records), (36, src.row_bytes), (56, 1),
    ]:
        footer[at : at + 4] = v.to_bytes(4, "little")
    footer[40] = {"f16": 1, "q8": 2}[src.codec]
    footer[48:56] = index_xxh3.to_bytes(8, "little")
    footer[64:72] = ds.FOOTER_MAGIC
    footer[72:80] = ds.xxh3_64(bytes(footer[:72])).to_bytes(8, "little")
    blob = bytes(body + index + footer)
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(blob)
    m = json.loads(json.dumps(manifest))
    m["samples"] = {"start": start, "end": end}
    m["shards"] = [
        {
            "file": name,
            "samples": {"start": start, "end": end},
            "records": (end - start) * src.epochs,
            "chunks": chunks,
            "bytes": len(blob),
            "checksum": f"xxh3:{index_xxh3:016x}",
        }
    ]
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(m, f, indent=2)


def make_two_shard_store(distill: str, src_path: str, split: int, work: str) -> str:
    src = ds.open_store(src_path)
    a, b, merged = (os.path.join(work, x) for x in ("part-a", "part-b", "merged"))
    for d in (a, b, merged):
        shutil.rmtree(d, ignore_errors=True)
    write_part(src.shards[0], src.manifest, src.samples.start, split, a)
    write_part(src.shards[0], src.manifest, split, src.samples.stop, b)
    src.close()
    run(distill, "merge", b, a, "--out", merged)
    v = json.loads(run(distill, "inspect", merged, "--verify", "--json"))
    check(v["verify"]["ok"], f"distill inspect --verify of the merged store: {v['verify']}")
    check(len(ds.open_store(merged).shards) == 2, "merged store does not have two shards")
    return merged


# ---------------------------------------------------------------------------------------------
# Damaged stores
# ---------------------------------------------------------------------------------------------


def expect_error(fn, *needles: str) -> None:
    try:
        fn()
    except ValueError as e:
        msg = str(e)
        for n in needles:
            check(n in msg, f"error {msg!r} does not mention {n!r}")
    else:
        raise Failure(f"no error (expected one mentioning {needles})")


def test_corruption(src: str, work: str) -> int:
    cases = 0

    def fresh(name: str) -> tuple[str, str, dict]:
        d = os.path.join(work, name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(src, d)
        with open(os.path.join(d, "manifest.json")) as f:
            m = json.load(f)
        return d, os.path.join(d, m["shards"][0]["file"]), m

    def patch(path: str, at: int, data: bytes) -> None:
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(data)

    def read_all(d: str) -> None:
        s = ds.open_store(d)
        for e in range(s.epochs):
            list(s.epoch(e))

    # A payload byte flipped: opens, but the chunk fails its checksum.
    d, shard, _ = fresh("bad-payload")
    e0 = ds.open_store(d).shards[0].index[0]
    with open(shard, "rb") as f:
        f.seek(e0.offset + ds.CHUNK_HEADER_BYTES + 5)
        byte = f.read(1)[0]
    patch(shard, e0.offset + ds.CHUNK_HEADER_BYTES + 5, bytes([byte ^ 0xFF]))
    st = ds.open_store(d)
    expect_error(lambda: st.record(e0.epoch, e0.first), os.path.basename(shard), "payload.checksum")
    cases += 1
    # A chunk header byte flipped.
    d, shard, _ = fresh("bad-chunk-header")
    patch(shard, e0.offset + 8, b"\xff")
    expect_error(lambda: read_all(d), os.path.basename(shard), "header.checksum")
    cases += 1
    # Truncated shard.
    d, shard, _ = fresh("truncated")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 7)
    expect_error(lambda: ds.open_store(d), os.path.basename(shard), "footer.magic")
    cases += 1
    # Tiny file.
    d, shard, _ = fresh("tiny")
    with open(shard, "r+b") as f:
        f.truncate(20)
    expect_error(lambda: ds.open_store(d), os.path.basename(shard), "size")
    cases += 1
    # Wrong header magic.
    d, shard, _ = fresh("bad-magic")
    patch(shard, 0, b"NOTASHRD")
    expect_error(lambda: ds.open_store(d), os.path.basename(shard), "header.magic")
    cases += 1
    # Newer shard version in the header.
    d, shard, _ = fresh("new-shard-version")
    patch(shard, 8, (ds.FORMAT_VERSION + 1).to_bytes(4, "little"))
    expect_error(lambda: ds.open_store(d), os.path.basename(shard), "header.version", "newer")
    cases += 1
    # Footer damaged (checksum).
    d, shard, _ = fresh("bad-footer")
    patch(shard, os.path.getsize(shard) - 80 + 12, b"\x09")
    expect_error(lambda: ds.open_store(d), os.path.basename(shard), "footer.checksum")
    cases += 1
    # Index damaged.
    d, shard, _ = fresh("bad-index")
    idx_off = int.from_bytes(open(shard, "rb").read()[-80:-72], "little")
    patch(shard, idx_off + 1, b"\x77")
    expect_error(lambda: ds.open_store(d), os.path.basename(shard), "index.checksum")
    cases += 1
    # Newer store version in the manifest.
    d, _, m = fresh("new-store-version")
    m["format_version"] = ds.FORMAT_VERSION + 1
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(m, f)
    expect_error(lambda: ds.open_store(d), "manifest.json", "format_version", "newer")
    cases += 1
    # Manifest and shard disagree on the size.
    d, _, m = fresh("wrong-bytes")
    m["shards"][0]["bytes"] += 1
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(m, f)
    expect_error(lambda: ds.open_store(d), "bytes", "manifest and shard disagree")
    cases += 1
    # No manifest: an unfinished store.
    d, _, _ = fresh("unfinished")
    os.rename(os.path.join(d, "manifest.json"), os.path.join(d, "writing.json"))
    expect_error(lambda: ds.open_store(d), d, "has not finished")
    cases += 1
    # Shard paths that could lead outside the store (FORMAT.md 1.2).
    for bad in ["/etc/passwd", "../../../../etc/passwd", "sub/../shard-x.dls", "./" + "x"]:
        d, shard, m = fresh("bad-path")
        m["shards"][0]["file"] = bad
        with open(os.path.join(d, "manifest.json"), "w") as f:
            json.dump(m, f)
        expect_error(lambda: ds.open_store(d), "shards[0].file", repr(bad))
        cases += 1
    # Too many classes for a reader to hold dense arrays of.
    d, _, m = fresh("too-many-classes")
    m["classes"] = 1 << 30
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(m, f)
    expect_error(lambda: ds.open_store(d), "manifest.json", "classes", "not between 1 and 16777216")
    cases += 1
    # Unknown keys in the manifest are ignored.
    d, _, m = fresh("extra-keys")
    m["some_future_key"] = {"x": 1}
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(m, f)
    ds.open_store(d).record(0, 0)
    cases += 1
    return cases


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    distill, synth, work = (os.path.abspath(a) for a in argv[1:])
    os.makedirs(work, exist_ok=True)
    try:
        test_xxh3()
        test_aug_codec()
        stores = {
            # name: synth flags
            "q8": ["--samples", "300", "--epochs", "3", "--classes", "100", "--k", "10", "--chunk-records", "64"],
            "f16": ["--samples", "200", "--epochs", "2", "--classes", "50", "--k", "5", "--codec", "f16", "--chunk-records", "48"],
            "q8-k-eq-c": ["--samples", "100", "--epochs", "1", "--classes", "10", "--k", "10", "--seed", "3"],
            "f16-k-eq-c": ["--samples", "60", "--epochs", "1", "--classes", "8", "--k", "8", "--codec", "f16"],
            "q8-k1": ["--samples", "80", "--epochs", "2", "--classes", "20", "--k", "1", "--chunk-records", "30"],
            "f16-u32-indices": ["--samples", "40", "--epochs", "1", "--classes", "70000", "--k", "3", "--codec", "f16", "--measure-every", "1000"],
        }
        paths = {}
        for name, flags in stores.items():
            paths[name] = os.path.join(work, name)
            run(synth, "--out", paths[name], *flags)
        paths["two-shards"] = make_two_shard_store(distill, paths["q8"], 128, work)
        for name, p in paths.items():
            compare_store(distill, p)
        cases = test_corruption(paths["q8"], work)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print(
        f"OK: {Stats.records} records in {len(paths)} stores match distill inspect "
        f"({Stats.values} values at tau {TAUS}, {Stats.exact} bit-identical in f32, "
        f"max |diff| {Stats.max_diff:.2e}); {cases} damaged-store cases raise clear errors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
