"""Bit-identity of every registered solver with the stored golden outputs (tests/data/golden_solvers.pt),
on the CPU kernels the file was made with (to 1e-12 on others).

tests/data/make_golden_solvers.py describes the cases and regenerates the file; a difference here is a
numerical change of the driver, a stepper or the noise streams, which must be intended and explained.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[1] / "data"
sys.path.insert(0, str(DATA))

import make_golden_solvers as golden  # noqa: E402

STORED = torch.load(DATA / "golden_solvers.pt")
# The CPU kernel set torch dispatched to when the file was written (make_golden_solvers.py records it;
# None for a file written before it did). Vectorised kernels (AVX2 against AVX-512) may differ in the
# last bits, so bit-identity is asserted on the same kernel set and agreement to 1e-12 elsewhere: still
# orders of magnitude below any change of a formula or a noise stream.
RECORDED_CPU = golden.recorded_cpu_capability()


def assert_reproduced(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    if torch.equal(got, want):
        return
    diff = (got - want).abs().max().item()
    here = torch.backends.cpu.get_cpu_capability()
    assert RECORDED_CPU != here, f"{what}: max |diff| = {diff:.3e} on the CPU kernels ({here}) the file was made on"
    scale = 1.0 + want.abs().max().item()
    assert diff <= 1e-12 * scale, (
        f"{what}: max |diff| = {diff:.3e} (file made on {RECORDED_CPU or 'unrecorded'} kernels, running on {here})")


@pytest.fixture(scope="module")
def computed() -> dict:
    # 16 samples: threads only add contention (the outputs do not depend on the thread count).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return golden.compute()
    finally:
        torch.set_num_threads(threads)


def test_every_registered_solver_has_a_golden_case() -> None:
    import fewstep as fs

    names = {key.split("/", 1)[1].split("@")[0] for key in STORED}
    for info in fs.solvers():
        covered = info["name"] in names or any(s == info["name"] for _, s, _ in golden.STOCHASTIC)
        assert covered, f"solver '{info['name']}' has no golden case: add it and regenerate the file"


@pytest.mark.parametrize("key", sorted(STORED))
def test_bit_identical(computed: dict, key: str) -> None:
    assert key in computed, f"case {key} is no longer computed"
    want, got = STORED[key], computed[key]
    assert got["nfe"] == want["nfe"], key
    assert got["x"].dtype == want["x"].dtype and got["x"].shape == want["x"].shape, key
    assert_reproduced(got["x"], want["x"], key)


@pytest.mark.parametrize("mode", sorted(golden.MICRO_SAMPLERS))
def test_micro_solver_door_runs_the_micro_sampler(mode: str) -> None:
    # fs.sample(teacher, x_T, solver="micro", path=file, steps=N) is MicroSampler.load(file).sample(teacher, x_T, N):
    # both heads (the learned step sizes through LearnedStepController), the same bits as the stored sampler run.
    model, x_T = golden.problem()
    out = golden.fs.sample(model, x_T, solver="micro", path=str(golden.MICRO_SAMPLERS[mode]), steps=golden.NFE)
    want = STORED[f"micro/{mode}"]
    assert out.nfe == want["nfe"]
    assert_reproduced(out.x, want["x"], f"micro/{mode}")
