"""Concurrent sampling from Python threads gives the bits of sequential runs (docs/reliability.md):
the loop keeps no shared mutable state, the interrupt check only polls in the main thread, and
per-sample seeds make each result independent of the others."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

import fewstep as fs
from faultlib import SOAK, trained  # noqa: F401 - the fixture


def _exact_model() -> fs.Denoiser:
    g = torch.Generator().manual_seed(3)
    mix = fs.GaussianMixture(weights=torch.ones(3, dtype=torch.float64) / 3,
                             means=torch.randn(3, 4, dtype=torch.float64, generator=g),
                             covariances=torch.rand(3, 4, dtype=torch.float64, generator=g) * 0.2 + 0.05)
    return fs.Denoiser.exact(mix, fs.VPLinear())


def _run_threads(model, jobs: list[dict], threads: int) -> list[torch.Tensor]:
    results: list = [None] * len(jobs)
    errors: list = []

    def worker(k: int) -> None:
        try:
            for i in range(k, len(jobs), threads):
                results[i] = fs.sample(model, **jobs[i]).x
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("kind", ["exact", "torchscript"])
def test_threads_match_sequential_bits(kind: str, trained: Path) -> None:
    if kind == "exact":
        model, dim = _exact_model(), 4
    else:
        model, dim = fs.load_model_file(str(trained / "model.pt"))["denoiser"], 2
    solvers = ["dpmpp_2m", "heun", "euler_maruyama", "dpm_adaptive"]
    n_jobs = 64 if SOAK else 16
    jobs = []
    for i in range(n_jobs):
        seeds = [100 * i + j for j in range(3)]
        solver = solvers[i % len(solvers)]
        job = dict(x_T=fs.randn((3, dim), seeds=seeds, dtype=torch.float64 if kind == "exact" else torch.float32),
                   solver=solver, seeds=seeds)
        if solver != "dpm_adaptive":
            job["steps"] = 6
        jobs.append(job)
    sequential = [fs.sample(model, **job).x for job in jobs]
    for _ in range(5 if SOAK else 1):
        threaded = _run_threads(model, jobs, threads=8)
        for a, b in zip(sequential, threaded):
            assert torch.equal(a, b)
