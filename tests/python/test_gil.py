"""The C++ sampling loop runs without the GIL."""

from __future__ import annotations

import threading
import time

import torch

import fewstep as fs


def test_sampling_loop_releases_the_gil() -> None:
    # A pure C++ run (exact model, no Python callback) in a worker thread. If it held the GIL,
    # the main thread could not execute a single bytecode for the whole run: the largest gap
    # between its loop iterations would be about the run's duration.
    gmm = fs.GaussianMixture.random(dim=16, components=8, seed=0)
    model = fs.Denoiser.exact(gmm, fs.VPLinear())
    x = torch.randn(4000, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    started = threading.Event()
    span = {}

    def work() -> None:
        started.set()
        t0 = time.perf_counter()
        fs.sample(model, x, solver="heun", steps=20)
        span["run"] = time.perf_counter() - t0

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    last = time.perf_counter()
    max_gap = 0.0
    while worker.is_alive():
        now = time.perf_counter()
        max_gap = max(max_gap, now - last)
        last = now
    worker.join()
    assert span["run"] > 0.05, "the run is too short for this test to mean anything"
    assert max_gap < 0.5 * span["run"], (max_gap, span["run"])
