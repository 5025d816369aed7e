"""A PyTorch LeNet-5 student distilled from a distill label store: the MNIST demo's student
(`distill demo`, `data/demo/gen1/student-kd`) written in PyTorch, fed by `distill.Loader`.

    python examples/train_kd.py --store data/demo/gen1/labels-train \
        --test-store data/demo/gen1/labels-test --data data/mnist

trains with KD (τ = 4, w = 0.9; SGD with Nesterov momentum 0.9, lr 0.05 on a per-step cosine,
weight decay 5e-4, batch 64, inputs normalized with mean 0.1307 and std 0.3081: the demo's
settings) and prints, per epoch, the training loss, seconds, test accuracy, and top-1 agreement
and KL(p_t ‖ p_s) against the teacher's test store, as `distill train` does.

`--model resnet20` trains distill's CIFAR ResNet-20 instead (without `--test-store` it only
trains and times epochs: scripts/bench-train-backends.sh runs it next to `distill train`).

The same script is the DDP form: under torchrun it trains one replica per process, each
replaying its rank's part of every epoch (`distill.Loader(rank=, world_size=)`), gradients
averaged by DistributedDataParallel; `--batch` stays the global batch:

    torchrun --nproc-per-node 2 examples/train_kd.py --backend gloo ... (CPU)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import distill
import distill.torch as dt


class LeNet5(nn.Module):
    """distill's `lenet5` (student-train/src/models/lenet5.rs) with BatchNorm."""

    def __init__(self, channels: int, size: int, classes: int):
        super().__init__()
        pad = 2 if size <= 28 else 0
        side = ((size + 2 * pad - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=pad)
        self.norm1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.norm2 = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.norm2(self.conv2(x))), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class BasicBlock(nn.Module):
    """distill's ResNet block (student-train/src/models/resnet.rs): conv-BN-ReLU-conv-BN plus the
    shortcut (a 1×1 conv and BN when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet20(nn.Module):
    """distill's `resnet20` (CIFAR ResNet: 3 stages of 3 blocks, 16/32/64 channels)."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.stem = nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
        self.stem_norm = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage in range(3):
            cout = 16 << stage
            for b in range(3):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem_norm(self.stem(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def lr_at(lr: float, epoch: int, step: int, steps: int, epochs: int) -> float:
    """distill's per-step cosine to 0 (optim.rs `lr_at`, no warm-up)."""
    t, total = epoch * steps + step, epochs * steps
    progress = 0.0 if total <= 1 else min(max(t / (total - 1), 0.0), 1.0)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: nn.Module, test: distill.Loader, test_store: distill.Store) -> dict:
    """Test accuracy, top-1 agreement with the teacher and mean KL(p_t ‖ p_s) at τ = 1, over the
    test store's images (stored without augmentation, so replaying them gives the plain image)."""
    model.eval()
    top1 = test_store.records(0, *test_store.samples)["indices"][:, 0]
    first = test_store.samples[0]
    correct = agree = n = 0
    kl = 0.0
    test.set_epoch(0)
    for b in dt.ReplayDataset(test):
        logits = model(b["inputs"]).double()
        pred = logits.argmax(dim=1)
        correct += int((pred == b["labels"]).sum())
        agree += int((pred.numpy() == top1[b["samples"].numpy() - first]).sum())
        p = b["teacher"].double()
        log_q = F.log_softmax(logits, dim=1)
        kl += float(torch.where(p > 0, p * (p.clamp_min(1e-300).log() - log_q), 0.0).sum())
        n += len(pred)
    model.train()
    return {"test_accuracy": correct / n, "test_agreement": agree / n, "test_kl": kl / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="training label store")
    ap.add_argument("--test-store", help="teacher labels of the test split (fidelity metrics)")
    ap.add_argument("--model", choices=["lenet5", "resnet20"], default="lenet5")
    ap.add_argument("--mean", type=float, nargs="+", default=[0.1307])
    ap.add_argument("--std", type=float, nargs="+", default=[0.3081])
    ap.add_argument("--data", required=True, help="the data the stores label (MNIST IDX)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64, help="global batch (all ranks)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--kd-weight", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="Loader threads")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--backend", default="gloo", help="torch.distributed backend under torchrun")
    ap.add_argument("--json", help="write the per-epoch metrics here (rank 0)")
    a = ap.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group(a.backend)
    if a.torch_threads:
        torch.set_num_threads(a.torch_threads)
    if a.batch % world:
        raise SystemExit(f"--batch {a.batch} must be a multiple of the {world} processes")
    torch.manual_seed(a.seed)

    store = distill.Store(a.store)
    mean, std = a.mean, a.std
    loader = distill.Loader(store, a.data, a.batch // world, seed=a.seed,
                            temperature=a.temperature, threads=a.threads, rank=rank,
                            world_size=world, mean=mean, std=std)
    train = dt.ReplayDataset(loader)
    first = next(iter(train))
    _, c, h, _ = first["inputs"].shape
    model = LeNet5(c, h, store.classes) if a.model == "lenet5" else ResNet20(c, store.classes)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    test_store = test = None
    if a.test_store:
        test_store = distill.Store(a.test_store)
        test = distill.Loader(test_store, a.data, 256, shuffle=False, temperature=1.0,
                              threads=a.threads, mean=mean, std=std)

    history = []
    steps = len(train)
    for epoch in range(a.epochs):
        train.set_epoch(epoch)
        t0 = time.perf_counter()
        total, seen = 0.0, 0
        for step, b in enumerate(train):
            for g in opt.param_groups:
                g["lr"] = lr_at(a.lr, epoch, step, steps, a.epochs)
            loss = dt.kd_loss(model(b["inputs"]), b, a.temperature, a.kd_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b["samples"])
            seen += len(b["samples"])
        secs = time.perf_counter() - t0
        if rank == 0:
            m = {"epoch": epoch, "train_loss": total / seen, "seconds": secs,
                 "images_per_sec": seen * world / secs}
            line = (f"epoch {epoch:2}  loss {m['train_loss']:.4f}  {secs:5.2f} s  "
                    f"{m['images_per_sec']:7.0f} img/s")
            if test is not None:
                m.update(evaluate(model.module if world > 1 else model, test, test_store))
                line += (f"  acc {m['test_accuracy']:.4f}  agree {m['test_agreement']:.4f}  "
                         f"kl {m['test_kl']:.4f}")
            history.append(m)
            print(line, flush=True)
    if rank == 0 and a.json:
        with open(a.json, "w") as f:
            json.dump({"world_size": world, "epochs": history}, f, indent=1)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
