"""Summaries shared by the MNIST bench scripts (bench-online, bench-transfer, bench-features):
a run's last metrics line, and mean ± sd over seeds as the tables of BENCHMARKS.md print them."""

import json
import os
import statistics


def last(run: str) -> dict:
    """The last line of `run`'s metrics.jsonl: the final epoch's metrics."""
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return json.loads(f.read().splitlines()[-1])


def spread(v: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def fidelity(runs: list[str]) -> tuple[list[dict], tuple[float, float], str]:
    """The final metrics of `runs`, their test agreement (%) as (mean, sd), and the table cells
    `agreement % | KL (nats) | accuracy %`, each mean ± sd."""
    m = [last(r) for r in runs]
    ag = spread([100 * x["test_agreement"] for x in m])
    kl = spread([x["test_kl"] for x in m])
    acc = spread([100 * x["test_accuracy"] for x in m])
    cells = f"{ag[0]:.2f} ± {ag[1]:.2f} | {kl[0]:.4f} ± {kl[1]:.4f} | {acc[0]:.2f} ± {acc[1]:.2f}"
    return m, ag, cells
