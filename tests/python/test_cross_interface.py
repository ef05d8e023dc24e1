"""One request, the same NFE and the same bits through the CLI and Python (docs/sampling.md).

For every registered solver, `fewstep sample --save-samples` and `fs.sample` run the same request on the
shipped 2-D mixture model (models/gmm2d-mlp-eps.pt) from the same per-sample seeds: x_T from the seeds,
stochastic solvers' step noise from the streams derived from them. tests/cpp/test_sample.cpp
(CrossInterface) checks the C++ SampleRequest against the same CLI runs, so the three doors agree.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

import fewstep as fs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FEWSTEP_CLI") or REPO / "build" / "bin" / "fewstep")
MODEL = REPO / "models" / "gmm2d-mlp-eps.pt"
N, SEED = 6, 40

pytestmark = pytest.mark.skipif(
    not BIN.is_file(), reason=f"{BIN} is not built (cmake --build build --target fewstep_cli, or set FEWSTEP_CLI)"
)

# (case, CLI flags, fs.sample keywords). Every registered solver with --steps 4 (dpm_solver_fast reads it
# as its budget), plus NFE budgets, the solver default of dpm_adaptive (adaptive) and tolerances.
EXTRA_CASES = [
    ("heun nfe 6", ["--solver", "heun", "--nfe", "6"], {"solver": "heun", "nfe": 6}),
    ("dpm_solver_fast nfe 7", ["--solver", "dpm_solver_fast", "--nfe", "7"], {"solver": "dpm_solver_fast", "nfe": 7}),
    ("dpm_solver_fast karras", ["--solver", "dpm_solver_fast", "--steps", "8", "--spacing", "karras"],
     {"solver": "dpm_solver_fast", "steps": 8, "spacing": "karras"}),
    ("dpm_adaptive default", ["--solver", "dpm_adaptive"], {"solver": "dpm_adaptive"}),
    ("heun_euler rtol", ["--solver", "heun_euler", "--rtol", "0.01"], {"solver": "heun_euler", "rtol": 0.01}),
    ("ddim eta", ["--solver", "ddim", "--steps", "5", "--option", "eta=1.0"], {"solver": "ddim", "steps": 5, "eta": 1.0}),
    ("unipc order 3", ["--solver", "unipc", "--steps", "6", "--option", "order=3", "--denoise-to-zero"],
     {"solver": "unipc", "steps": 6, "order": 3, "denoise_to_zero": True}),
]


def cases() -> list:
    out = [(name, ["--solver", name, "--steps", "4"], {"solver": name, "steps": 4}) for name in fs.solver_names()]
    return out + EXTRA_CASES


def cli_samples(flags: list, saved: Path) -> dict:
    proc = subprocess.run([str(BIN), "sample", "--model", str(MODEL), *flags, "--n", str(N), "--seed", str(SEED),
                           "--out", str(saved.with_suffix(".png")), "--save-samples", str(saved), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return torch.load(saved, weights_only=False)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every case's CLI run, launched a few at a time (most of a run is loading LibTorch)."""
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("cli")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(cli_samples, flags, tmp / f"{i}.pt") for i, (case, flags, _) in enumerate(cases())}
        return {case: f.result() for case, f in futures.items()}


@pytest.mark.parametrize("case, kwargs", [(c[0], c[2]) for c in cases()], ids=[c[0] for c in cases()])
def test_cli_and_python_spend_the_same_nfe_and_give_the_same_bits(case: str, kwargs: dict, cli_runs: dict) -> None:
    cli = cli_runs[case]
    seeds = list(range(SEED, SEED + N))
    x_T = fs.randn((N, 2), seeds=seeds)  # the CLI's x_T: float32 rows of randn_per_sample
    py = fs.sample(str(MODEL), x_T, seeds=seeds, **kwargs)
    assert cli["nfe"] == py.nfe, f"{case}: CLI spent {cli['nfe']} evaluations, Python {py.nfe}"
    assert cli["steps"] == py.steps, case
    assert cli["x"].dtype == py.x.dtype == torch.float32
    assert torch.equal(cli["x"], py.x), f"{case}: max |diff| = {(cli['x'] - py.x).abs().max().item():.3e}"


def test_dpm_solver_fast_spends_its_budget_through_the_cli(cli_runs: dict) -> None:
    # --steps is dpm_solver_fast's budget in the CLI too (its plan): 4 evaluations on 2 steps (orders 3, 1).
    assert cli_runs["dpm_solver_fast"]["nfe"] == 4 and cli_runs["dpm_solver_fast"]["steps"] == 2
