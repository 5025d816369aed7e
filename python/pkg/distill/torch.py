"""PyTorch side of distill: a `ReplayDataset` over a `distill.Loader` that yields torch tensors,
and `distill train`'s losses (`kd_loss`, `usi`, `cross_entropy`) on its batches.

Importing this module imports torch; `import distill` alone does not.

    import distill, distill.torch
    loader = distill.Loader("stores/train", "data/mnist", batch_size=64, temperature=4.0,
                            rank=rank, world_size=world)
    ds = distill.torch.ReplayDataset(loader, device="cuda")
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for b in ds:                        # dict of tensors, already batched
            loss = distill.torch.kd_loss(model(b["inputs"]), b, temperature=4.0, weight=0.9)

The `Loader` batches and replays on its own Rust threads, so a `torch.utils.data.DataLoader`
around the dataset must not add workers or batching: `DataLoader(ds, batch_size=None)`, or
iterate the dataset directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

__all__ = ["ReplayDataset", "cross_entropy", "feature_loss", "finish_inputs", "kd_loss",
           "kl_teacher_student", "usi"]


class ReplayDataset(IterableDataset):
    """The batches of `loader` (a `distill.Loader`) as dicts of tensors: `inputs` float32
    `[n, c, h, w]`, `hard` and `teacher` float32 `[n, classes]`, `samples` and `labels` int64
    `[n]`, and `temperature` (a float, the teacher's τ). The tensors share memory with the
    Loader's numpy arrays (no copy) unless `device` moves them; `pin_memory` pins them first so
    that the copy to a GPU is asynchronous. With a Loader made with `pixels=True`, u8 pixels
    (and a mixup's partner pixels and λ) cross instead, a quarter of the bytes, and `inputs` is
    computed on `device` by :func:`finish_inputs`: the same bits as the f32 Loader's."""

    def __init__(self, loader, device: torch.device | str | None = None, pin_memory: bool = False):
        super().__init__()
        self.loader = loader
        self.device = None if device is None else torch.device(device)
        self.pin_memory = pin_memory

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration replays (as `DistributedSampler.set_epoch`)."""
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            raise RuntimeError(
                "distill.torch.ReplayDataset: the Loader runs its own threads; use "
                "DataLoader(dataset, batch_size=None, num_workers=0) (every worker would replay "
                "the whole epoch)")
        tau = float(self.loader.temperature)
        mean, std = list(self.loader.mean), list(self.loader.std)
        for b in self.loader:
            raw = ("pixels", "partner", "lambda", "rest") if "pixels" in b else ("inputs",)
            out = {k: torch.from_numpy(b[k]) for k in raw if k in b}
            out["samples"] = torch.from_numpy(b["samples"].astype("int64"))
            # Data without hard labels (`distill label --unlabelled`): hard and labels are None.
            if b["hard"] is not None:
                out["hard"] = torch.from_numpy(b["hard"])
                out["labels"] = torch.from_numpy(b["labels"].astype("int64"))
            if "labelled" in b:
                out["labelled"] = torch.from_numpy(b["labelled"])
            if "teacher" in b:
                out["teacher"] = torch.from_numpy(b["teacher"])
            if self.pin_memory:
                out = {k: v.pin_memory() for k, v in out.items()}
            if self.device is not None:
                nb = self.pin_memory
                out = {k: v.to(self.device, non_blocking=nb) for k, v in out.items()}
            if "pixels" in out:
                out["inputs"] = finish_inputs(out.pop("pixels"), out.pop("partner", None),
                                              out.pop("lambda", None), out.pop("rest", None),
                                              mean, std)
            out.setdefault("hard", None)
            out.setdefault("labels", None)
            out["temperature"] = tau
            yield out


def finish_inputs(pixels: torch.Tensor, partner: torch.Tensor | None, lam: torch.Tensor | None,
                  rest: torch.Tensor | None, mean, std) -> torch.Tensor:
    """The normalized float32 inputs of a `pixels=True` batch, on the pixels' device:
    `pixels/255`, for batches with mixups `·λ + (partner/255)·rest`, then `(x − mean)·(1/std)`
    per channel; each an IEEE float32 operation in the order the Rust stream does them, so the
    result equals the f32 Loader's `inputs` bit for bit (FORMAT.md §4.1)."""
    x = pixels.to(torch.float32) / 255.0
    if partner is not None:
        x = x * lam.view(-1, 1, 1, 1) + (partner.to(torch.float32) / 255.0) * rest.view(-1, 1, 1, 1)
    dev = pixels.device
    m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    inv = (1.0 / torch.tensor(std, dtype=torch.float32)).to(dev).view(1, -1, 1, 1)
    return (x - m) * inv


def _teacher(batch: dict, temperature: float, loss: str) -> torch.Tensor:
    if "teacher" not in batch:
        raise ValueError(f"{loss}: the batch has no teacher distribution (a store without soft "
                         "labels, an embedding-only teacher's, teaches through feature_loss)")
    have = batch.get("temperature")
    if have is not None and abs(float(have) - float(temperature)) > 1e-6 * float(temperature):
        raise ValueError(
            f"{loss}: the batch's teacher is at temperature {have}, the loss needs {temperature} "
            f"(make the Loader with temperature={temperature})")
    return batch["teacher"]


def cross_entropy(student_logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """Mean over the batch of `−Σ_c y_c · log softmax(s)_c` with the (mixed) hard labels `y`:
    `distill train --loss ce`; over the rows with a hard label where `batch["labelled"]` says
    which (a list with unlabelled data). A batch without hard labels (its store's data is unlabelled) is
    refused: train it teacher-only (`kd_loss(weight=1)`, `usi(kd_only=True)`)."""
    if batch.get("hard") is None:
        raise ValueError("cross_entropy: the batch has no hard labels (its store's data is "
                         "unlabelled): use kd_loss with weight=1 or usi with kd_only=True")
    per_row = -(F.log_softmax(student_logits, dim=1) * batch["hard"]).sum(dim=1)
    labelled = batch.get("labelled")
    if labelled is None:
        return per_row.mean()
    # A list with unlabelled data: the mean over the rows that have a hard label.
    return per_row.sum() / labelled.sum().clamp_min(1)


def kl_teacher_student(student_logits: torch.Tensor, teacher: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Mean over the batch of `KL(p_t ‖ softmax(s/τ))`; classes with `p_t = 0` add nothing."""
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    log_p = teacher.clamp_min(1e-30).log()
    return (teacher * (log_p - log_q)).sum(dim=1).mean()


def kd_loss(student_logits: torch.Tensor, batch: dict, temperature: float = 4.0,
            weight: float = 0.9) -> torch.Tensor:
    """Hinton's KD, as `distill train --loss kd`: `(1 − w)·CE + w·τ²·KL(p_t^τ ‖ p_s^τ)`, with
    `batch["teacher"]` the teacher at τ (a Loader made with `temperature=τ`)."""
    if not (temperature > 0) or not (0.0 <= weight <= 1.0):
        raise ValueError(f"kd_loss: temperature {temperature} must be > 0 and weight {weight} "
                         "must lie in [0, 1]")
    t = _teacher(batch, temperature, "kd_loss")
    kl = weight * temperature * temperature * kl_teacher_student(student_logits, t, temperature)
    if weight == 1.0:
        return kl  # teacher-only: no hard labels needed
    return (1.0 - weight) * cross_entropy(student_logits, batch) + kl


def usi(student_logits: torch.Tensor, batch: dict, weight: float = 5.0,
        kd_only: bool = False) -> torch.Tensor:
    """USI, as `distill train --loss usi`: `CE + w·KL(p_t ‖ p_s)` at τ = 1 (a Loader made with
    `temperature=1.0`); `kd_only` drops the CE term (`--kd-only`)."""
    if not weight >= 0:
        raise ValueError(f"usi: weight {weight} must be ≥ 0")
    kl = weight * kl_teacher_student(student_logits, _teacher(batch, 1.0, "usi"), 1.0)
    return kl if kd_only else cross_entropy(student_logits, batch) + kl


def feature_loss(student_features: torch.Tensor, batch: dict, projector: torch.nn.Module,
                 kind: str = "cosine") -> torch.Tensor:
    """The feature term of `distill train --feature-weight w --feature-loss KIND` (add `w` times
    it to a soft-label loss): the student's penultimate features `[n, p]` through `projector`
    (a learned `torch.nn.Linear(p, d)`, trained with the student and dropped after) against the
    teacher's stored features `batch["features"]` `[n, d]` (a Loader made with `features=H`).
    `cosine`: the mean over rows of `1 − cos`, `cos = Σ p·t / sqrt(max(Σp²·Σt², 1e-16))`;
    `smooth-l1`: `smooth_l1_loss` (β = 1), `mse`: the mean squared error, each over every value."""
    t = batch.get("features")
    if t is None:
        raise ValueError("feature_loss: the batch has no teacher features (make the Loader with "
                         "features=H from a store labelled with --feature)")
    p = projector(student_features)
    if p.shape != t.shape:
        raise ValueError(f"feature_loss: the projector gives {tuple(p.shape)}, the teacher's "
                         f"features are {tuple(t.shape)}")
    if kind == "cosine":
        dot = (p * t).sum(dim=1)
        norms = (p.pow(2).sum(dim=1) * t.pow(2).sum(dim=1)).clamp_min(1e-16).sqrt()
        return (1.0 - dot / norms).mean()
    if kind == "smooth-l1":
        return F.smooth_l1_loss(p, t, beta=1.0)
    if kind == "mse":
        return F.mse_loss(p, t)
    raise ValueError(f"feature_loss: unknown kind {kind!r} (cosine, smooth-l1 or mse)")

