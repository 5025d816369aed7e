"""Tests `distill.torch` (needs torch, so it is not part of scripts/test.sh; run it in a venv
with torch and the module installed, `pip install ./python torch zstandard`):

    python python/test_torch.py DISTILL WORK_DIR

- `kd_loss`, `usi`, `cross_entropy` and `feature_loss` equal `distill train`'s losses on the cases of
  `loss_cases.json` (written and checked by student-train's `python_loss_cases_match` test, so
  they are what burn computes today);
- `ReplayDataset` yields the Loader's batches as tensors (same values, int64 ids, no copy of the
  float arrays), works under `DataLoader(batch_size=None)`, refuses worker processes, and a loss
  refuses a batch whose teacher temperature is not its own.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch

import distill
import distill.torch as dt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_module import check, expect, label_with_trained_teacher, write_npy_digits  # noqa: E402


def test_losses() -> int:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "loss_cases.json")) as f:
        cases = json.load(f)
    s, hard, teacher = (torch.tensor(cases[k], dtype=torch.float32)
                        for k in ("logits", "hard", "teacher"))
    for case in cases["cases"]:
        batch = {"hard": hard, "teacher": teacher, "temperature": case["temperature"]}
        if case["loss"] == "ce":
            got = dt.cross_entropy(s, batch)
        elif case["loss"] == "kd":
            got = dt.kd_loss(s, batch, case["temperature"], case["weight"])
        else:
            got = dt.usi(s, batch, case["weight"], case["kd_only"])
        want = case["value"]
        check(abs(float(got) - want) <= 2e-6 * max(abs(want), 1.0), f"{case}: torch gives {got}")
    # Gradients flow (the losses are differentiable functions of the logits).
    x = s.clone().requires_grad_(True)
    dt.kd_loss(x, {"hard": hard, "teacher": teacher}, 4.0, 0.9).backward()
    check(x.grad is not None and torch.isfinite(x.grad).all(), "kd gradient")
    b = {"hard": hard, "teacher": teacher, "temperature": 2.0}
    expect(lambda: dt.kd_loss(s, b, 4.0, 0.9), ValueError, "temperature 2.0")
    expect(lambda: dt.usi(s, b), ValueError, "temperature=1.0")
    expect(lambda: dt.kd_loss(s, {"hard": hard}, 4.0, 0.9), ValueError, "no teacher")
    expect(lambda: dt.kd_loss(s, b, 2.0, 1.5), ValueError, "weight")
    # The feature term, through a projector holding burn's weights (torch stores W transposed).
    sf, w, tf = (torch.tensor(cases[k], dtype=torch.float32)
                 for k in ("student_features", "projector_weight", "teacher_features"))
    proj = torch.nn.Linear(w.shape[0], w.shape[1])
    with torch.no_grad():
        proj.weight.copy_(w.T)
        proj.bias.copy_(torch.tensor(cases["projector_bias"], dtype=torch.float32))
    for case in cases["feature_cases"]:
        got = dt.feature_loss(sf, {"features": tf}, proj, case["kind"]).detach()
        want = case["value"]
        check(abs(float(got) - want) <= 2e-6 * max(abs(want), 1.0), f"{case}: torch gives {got}")
    expect(lambda: dt.feature_loss(sf, {}, proj), ValueError, "no teacher features")
    expect(lambda: dt.feature_loss(sf, {"features": tf}, proj, "l2"), ValueError, "unknown kind")
    return len(cases["cases"]) + len(cases["feature_cases"])


def test_dataset(distill_bin: str, work: str) -> int:
    root = os.path.join(work, "torch")
    shutil.rmtree(root, ignore_errors=True)
    data = os.path.join(root, "data")
    write_npy_digits(data, 64)

    store = label_with_trained_teacher(distill_bin, root, data, "store", "--topk", "3")

    def loader():
        return distill.Loader(store, data, 10, seed=4, temperature=2.0, threads=1)

    want = loader()
    want.set_epoch(1)
    want = list(want)
    ds = dt.ReplayDataset(loader())
    check(len(ds) == 7, f"len {len(ds)}")
    for through in (ds, torch.utils.data.DataLoader(ds, batch_size=None)):
        ds.set_epoch(1)
        got = list(through)
        check(len(got) == len(want), "as many batches as the Loader")
        for g, w in zip(got, want):
            check(g["temperature"] == 2.0, "temperature")
            for k in ("inputs", "hard", "teacher"):
                check(g[k].dtype == torch.float32 and np.array_equal(g[k].numpy(), w[k]), k)
            for k in ("samples", "labels"):
                check(g[k].dtype == torch.int64 and np.array_equal(g[k].numpy(), w[k]), k)
    # pixels=True: u8 crosses, inputs are finished by torch to the same bits.
    u8 = dt.ReplayDataset(distill.Loader(store, data, 10, seed=4, temperature=2.0, threads=1,
                                         pixels=True))
    u8.set_epoch(1)
    for g, w in zip(u8, want):
        check("pixels" not in g and g["inputs"].dtype == torch.float32, "finished inputs")
        check(np.array_equal(g["inputs"].numpy().view(np.uint32), w["inputs"].view(np.uint32)),
              "u8 batches finished by torch equal the f32 Loader bit for bit")
    b = next(iter(ds))
    loss = dt.kd_loss(torch.zeros(len(b["samples"]), 4), b, 2.0, 0.5)
    check(torch.isfinite(loss), "kd on a replayed batch")
    expect(lambda: dt.usi(torch.zeros(len(b["samples"]), 4), b), ValueError, "temperature")
    workers = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    try:
        next(iter(workers))
        raise AssertionError("two workers must be refused")
    except Exception as e:  # the worker's RuntimeError, re-raised by DataLoader
        check("num_workers=0" in str(e), f"worker refusal says what to do: {e}")
    return len(want)


def main(argv: list[str]) -> int:
    n = test_losses()
    batches = test_dataset(os.path.abspath(argv[1]), os.path.abspath(argv[2]))
    print(f"OK: {n} loss cases equal distill train's (torch {torch.__version__}); "
          f"ReplayDataset gave {batches} batches equal to the Loader's")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
