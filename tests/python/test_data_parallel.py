"""The one training loop under data parallelism: two gloo processes against one process, for every trainer.

Each process builds the same trainer (same seed, same data), draws the randomness of the whole batch
and trains on its half; the gradients are averaged with an all-reduce before every update. The mean of
the two half-batch means is the whole batch's mean, so both processes must end bit-identical to each
other and equal, up to floating-point summation order, to one process trained on the whole batches.
"""

from __future__ import annotations

import pytest
import torch

import fewstep as fs
from conftest import needs_gloo, run_in_processes

BATCH, STEPS = 16, 4


class Net(torch.nn.Module):
    """net(x, t[, y, w]) for 2-D points, float64 (so summation order is the only difference)."""

    def __init__(self, inputs: int = 2, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(0.3 * torch.randn(inputs + 2, 16, generator=g, dtype=torch.float64))
        self.b = torch.nn.Parameter(0.3 * torch.randn(16, 2, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        columns = [x, t[:, None].to(x.dtype), torch.cos(t)[:, None].to(x.dtype)]
        columns += [e[:, None].to(x.dtype) for e in extra]
        return torch.tanh(torch.cat(columns, 1) @ self.a) @ self.b


class ClassEps(torch.nn.Module):
    """A conditional teacher eps(x, t, y); y = 3 is the null class."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = torch.nn.Parameter(torch.randn(4, 2, generator=torch.Generator().manual_seed(5),
                                                    dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * x + t[:, None] * self.shift[y]


def points(n: int = 64, seed: int = 2) -> torch.Tensor:
    return fs.GaussianMixture.random(dim=2, components=3, seed=4).sample(n, torch.Generator().manual_seed(seed)).double()


def state(net: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


LOOP = dict(batch_size=BATCH, lr=1e-2, ema=0.9, seed=3, progress=False, checkpoint_every=0)


def all_runs() -> dict:
    """Every trainer's (trained, untrained) result after STEPS updates of its ready loop (data-parallel when
    torch.distributed is initialised with two processes)."""
    torch.set_num_threads(1)
    vp = fs.VPLinear()
    exact = fs.Denoiser.exact(fs.GaussianMixture.random(dim=2, components=3, seed=4), vp)
    out = {}
    net = Net()
    result = fs.train_denoiser(net, points(), vp, STEPS, prediction="v", **LOOP)
    out["dsm"] = ({"ema": state(result.ema), "online": state(net)}, {"ema": state(Net()), "online": state(Net())})
    result = fs.distill_progressive(Net(), points(), vp, initial_steps=4, final_steps=2, iterations=2, **LOOP)
    out["progressive"] = (state(result.student), state(Net()))  # crosses a round change (teacher, AdamW, EMA reset)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x_0 = 0.5 * x_T + 0.1
    result = fs.distill_knowledge(Net(), x_T, x_0, vp, fs.timesteps(vp, 2), iterations=STEPS, **LOOP)
    out["kd"] = (state(result.student), state(Net()))
    labels = torch.arange(64) % 3
    result = fs.distill_guidance(ClassEps(), Net(inputs=4), points(), labels, vp, 3, iterations=STEPS, **LOOP)
    out["guidance"] = (state(result.student), state(Net(inputs=4)))
    for method in ("cd", "ct", "ict"):
        result = fs.distill_consistency(Net(), points(), vp, method=method, teacher=exact, iterations=STEPS,
                                        consistency={"num_points": 6, "ict_s0": 4, "ict_s1": 8}, **LOOP)
        out[f"consistency_{method}"] = (state(result.student), state(Net()))
    # The fake denoiser's gradients are averaged too (its updates follow the student's).
    result = fs.distill_distribution_matching(Net(), Net(seed=1), points(), vp, iterations=STEPS,
                                              distribution_matching={"student": "x0", "warmup": 1,
                                                                     "fake_lr": 1e-2}, **LOOP)
    out["distribution_matching"] = (state(result.student), state(Net()))
    data = fs.dense_trajectories(exact, "exact mixture", [2], 64, segments=8, substeps=2, dtype=torch.float64,
                                 progress=False)
    ddim = fs.sample(exact, x_T[:8].float(), solver="ddim", steps=4).x  # what the untrained heads sample
    for mode in ("residual", "joint"):
        sampler = fs.distill_micro(exact, teacher_id="exact mixture", mode=mode, steps=STEPS, trajectories=data,
                                   batch=BATCH, lr=1e-2, ema_decay=0.0, budget_min=3, budget_max=5, seed=3,
                                   progress=False)
        out[f"micro_{mode}"] = (sampler.sample(exact, x_T[:8].float(), nfe=4).x, ddim)
    return out


# Float64 Python losses: the two-process gradient differs from the one-process one by summation order,
# |dg| ~ 1e-17 for O(0.1) per-row terms; AdamW divides by sqrt(v) + eps (1e-8), so an update moves by at
# most lr |dg| / eps ~ 1e-2 * 1e-17 / 1e-8 = 1e-11 per step: 4 steps stay below 1e-10.
# Micro's heads are float32 (the C++ trainer's) and its batch is coupled (h_phi's grid is the batch's mean
# logit, averaged over the processes): kernels on half batches round differently, O(eps_32 = 6e-8) relative
# per operation; through 4 AdamW steps (lr 1e-2) and a 4-step sampler that is O(1e-3) of the weights'
# precision at most, bounded here by 1e-4 on the O(1) samples -- still 1e4 times below what training moved.
TOLERANCE = {"micro_residual": 1e-4, "micro_joint": 1e-4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    ranks = run_in_processes(tmp_path_factory.mktemp("dp"), all_runs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = all_runs()
    finally:
        torch.set_num_threads(threads)
    return ranks, single


def flat(value) -> list:
    return [v for x in value.values() for v in flat(x)] if isinstance(value, dict) else [value]


def max_difference(a, b) -> float:
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(flat(a), flat(b)))


@needs_gloo
@pytest.mark.parametrize("trainer", ["dsm", "progressive", "kd", "guidance", "consistency_cd", "consistency_ct",
                                     "consistency_ict", "distribution_matching", "micro_residual",
                                     "micro_joint"])
def test_two_processes_match_one_process(runs: tuple, trainer: str) -> None:
    ranks, single = runs
    (a, _), (b, _), (one, untrained) = ranks[0][trainer], ranks[1][trainer], single[trainer]
    for x, y in zip(flat(a), flat(b)):
        assert torch.equal(x, y), "the two processes must hold the same weights"
    worst, moved = max_difference(a, one), max_difference(one, untrained)
    print(f"[ info ] data parallel {trainer}: max |two processes - one process| = {worst:.3g} "
          f"(training moved the result by {moved:.3g})")
    tolerance = TOLERANCE.get(trainer, 1e-10)
    assert worst <= tolerance, worst
    # Training changed the result far beyond the tolerance: a process that trained on its half alone (no
    # averaging) would have been caught.
    assert moved > 100 * tolerance, moved
