"""Python denoiser training: DSMLoss against closed forms, the ready loop, exact resume, DDP over gloo."""

from __future__ import annotations

import math
import os
import re
from typing import Optional

import pytest
import torch

import fewstep as fs
from conftest import BETA_MAX, BETA_MIN, ddp_trained_states, needs_gloo, vp_linear_log_alpha

PREDICTIONS = ["eps", "x0", "v", "score", "flow"]
WEIGHTINGS = ["uniform", "truncated_snr", "min_snr"]
GAMMA = 5.0


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one intra-op thread is fastest, and immune to a busy machine (a 2-thread
    OpenMP region whose second thread is descheduled waits for it at every op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Independent closed forms for VP linear (conftest's log alpha), written without fewstep.


def vp_closed_form(t: torch.Tensor) -> dict:
    """alpha, sigma, their time derivatives and SNR of VP linear at float64 times t."""
    log_a = vp_linear_log_alpha(t)
    alpha = torch.exp(log_a)
    sigma = torch.sqrt(-torch.expm1(2.0 * log_a))
    dlog_a = -0.5 * (BETA_MIN + t * (BETA_MAX - BETA_MIN))  # d log alpha / dt = -beta(t)/2
    alpha_dot = alpha * dlog_a
    sigma_dot = -alpha * alpha_dot / sigma  # from alpha^2 + sigma^2 = 1
    return {"alpha": alpha, "sigma": sigma, "alpha_dot": alpha_dot, "sigma_dot": sigma_dot,
            "snr": alpha**2 / sigma**2}


def native_coefficients(prediction: str, f: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with native target a x0 + b eps."""
    zero, one = torch.zeros_like(f["alpha"]), torch.ones_like(f["alpha"])
    return {
        "eps": (zero, one),
        "x0": (one, zero),
        "v": (-f["sigma"], f["alpha"]),
        "score": (zero, -1.0 / f["sigma"]),
        "flow": (f["alpha_dot"], f["sigma_dot"]),
    }[prediction]


def x0_scale(prediction: str, f: dict) -> torch.Tensor:
    """c_t = |native error|^2 / |x0 error|^2, in closed form per prediction type (VP)."""
    return {
        "eps": f["snr"],
        "x0": torch.ones_like(f["snr"]),
        "v": f["snr"] + 1.0,
        "score": f["snr"] / f["sigma"] ** 2,
        "flow": f["alpha_dot"] ** 2 / f["sigma"] ** 4,
    }[prediction]


def x0_weight(weighting: str, prediction: str, f: dict) -> torch.Tensor:
    return {
        "uniform": x0_scale(prediction, f),
        "truncated_snr": torch.clamp(f["snr"], min=1.0),
        "min_snr": torch.clamp(f["snr"], max=GAMMA),
    }[weighting]


def column(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def tiny_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([1e-3, 0.02, 0.1, 0.35, 0.7, 1.0], dtype=torch.float64)  # SNR from ~1e4 to ~4e-5
    return x0, eps, t


# ----------------------------------------------------------------------------------------------
# DSMLoss: the C++ dsm_inputs through the bindings against the closed forms.


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_inputs_and_loss_match_closed_form(vp: fs.VPLinear, prediction: str, weighting: str) -> None:
    x0, eps, t = tiny_case()
    f = vp_closed_form(t)
    dsm = fs.DSMLoss(vp, prediction=prediction, weighting=weighting, min_snr_gamma=GAMMA)
    inp = dsm.inputs(x0, t=t, eps=eps)
    a, b = native_coefficients(prediction, f)
    # Round-off of float64 arithmetic (the score target at t = 1e-3 is ~100 eps, so relative).
    tol = {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(inp.x_t, column(f["alpha"], x0) * x0 + column(f["sigma"], x0) * eps, **tol)
    torch.testing.assert_close(inp.t_input, t, rtol=0, atol=0)
    torch.testing.assert_close(inp.target, column(a, x0) * x0 + column(b, x0) * eps, **tol)
    torch.testing.assert_close(inp.weight, x0_weight(weighting, prediction, f) / x0_scale(prediction, f), **tol)
    for i, ti in enumerate(t.tolist()):
        assert fs.x0_loss_weight(weighting, prediction, vp, ti, GAMMA) == pytest.approx(
            x0_weight(weighting, prediction, f)[i].item(), rel=1e-12)
        assert fs.train.native_error_scale(prediction, vp, ti) == pytest.approx(
            x0_scale(prediction, f)[i].item(), rel=1e-12)

    # A network whose implied data prediction is x0 + delta (and eps_hat = (x_t - alpha x0_hat)/sigma)
    # has per-sample loss w_t * mean(delta^2): the weighting acts on the x0-error scale whatever the
    # prediction type. delta = 0 is the perfect network: zero loss.
    delta = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    delta *= torch.tensor([0.5, 1.0, 2.0, 0.1, 3.0, 1.5], dtype=torch.float64)[:, None]
    for scale in (0.0, 1.0):
        x0_hat = x0 + scale * delta
        eps_hat = eps - column(f["alpha"] / f["sigma"], x0) * (scale * delta)
        calls = []

        def net(x_t: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
            calls.append((x_t, t_in))
            return column(a, x0) * x0_hat + column(b, x0) * eps_hat

        loss = dsm(net, x0, t=t, eps=eps)
        expected = (x0_weight(weighting, prediction, f) * (scale * delta).pow(2).mean(1)).mean()
        assert loss.dim() == 0
        if scale == 0.0:
            assert abs(loss.item()) < 1e-18
        else:
            assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
        assert len(calls) == 1 and torch.equal(calls[0][0], inp.x_t)


@pytest.mark.parametrize("time_input, scale", [("sigma", 1.0), ("lambda", 1.0), ("t", 1000.0)])
def test_time_input_conventions(vp: fs.VPLinear, time_input: str, scale: float) -> None:
    x0, eps, t = tiny_case()
    f = vp_closed_form(t)
    inp = fs.DSMLoss(vp, time_input=time_input, time_scale=scale).inputs(x0, t=t, eps=eps)
    expected = {"sigma": f["sigma"], "lambda": torch.log(f["alpha"] / f["sigma"]), "t": t}[time_input] * scale
    torch.testing.assert_close(inp.t_input, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", [fs.VE(0.002, 80.0), fs.FlowMatching(), fs.VPCosine()], ids=repr)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_x0_error_scale_on_other_families(schedule: fs.NoiseSchedule, prediction: str) -> None:
    """The w_t * mean(delta^2) identity on VE, flow and cosine schedules (alpha/sigma from fewstep)."""
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 4, generator=g, dtype=torch.float64)
    delta = 0.3 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    t = torch.linspace(schedule.t_min, schedule.t_max, 5, dtype=torch.float64)
    dsm = fs.DSMLoss(schedule, prediction=prediction, weighting="min_snr")
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)

    def net(x_t: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        outs = [fs.native_from_x0_eps((x0 + delta)[i:i + 1],
                                      (eps - alpha[i] / sigma[i] * delta)[i:i + 1], prediction, schedule, ti)
                for i, ti in enumerate(t.tolist())]
        return torch.cat(outs)

    w = torch.clamp(alpha**2 / sigma**2, max=GAMMA)
    expected = (w * delta.pow(2).mean(1)).mean()
    assert dsm(net, x0, t=t, eps=eps).item() == pytest.approx(expected.item(), rel=1e-9)


def test_draws_follow_the_cpp_trainer_order_and_range(vp: fs.VPLinear) -> None:
    dsm = fs.DSMLoss(vp, t_min=0.2, t_max=0.6)
    x0 = torch.zeros(64, 1, 2, 2)
    inp = dsm.inputs(x0, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = 0.2 + (0.6 - 0.2) * torch.rand(64, generator=g, dtype=torch.float64)  # t first, float64 ...
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)  # ... then eps in x0's dtype
    assert torch.equal(inp.t, t) and torch.equal(inp.eps, eps)
    assert 0.2 <= inp.t.min().item() and inp.t.max().item() <= 0.6
    assert inp.x_t.dtype == torch.float32 and inp.weight.dtype == torch.float32 and inp.t_input.shape == (64,)


def test_gradient_matches_pure_torch(vp: fs.VPLinear) -> None:
    x0, eps, t = tiny_case()
    f = vp_closed_form(t)
    lin = torch.nn.Linear(4, 3, dtype=torch.float64)

    def net(x: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        return lin(torch.cat([x, t_in[:, None]], dim=1))

    dsm = fs.DSMLoss(vp, prediction="v", weighting="truncated_snr")
    dsm(net, x0, t=t, eps=eps).backward()
    got = [p.grad.clone() for p in lin.parameters()]
    lin.zero_grad()
    a, b = native_coefficients("v", f)
    x_t = column(f["alpha"], x0) * x0 + column(f["sigma"], x0) * eps
    target = column(a, x0) * x0 + column(b, x0) * eps
    weight = torch.clamp(f["snr"], min=1.0) / (f["snr"] + 1.0)
    (weight * (net(x_t, t) - target).pow(2).mean(1)).mean().backward()
    for g_cpp, p in zip(got, lin.parameters()):
        torch.testing.assert_close(g_cpp, p.grad, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# The ready loop.


class TinyMLP(torch.nn.Module):
    """A time-conditioned MLP: net(x, t) for 2-D points."""

    def __init__(self, dim: int = 2, hidden: int = 64, dropout: float = 0.0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(dim + 2, hidden, dtype=dtype), torch.nn.SiLU(), torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, hidden, dtype=dtype), torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim, dtype=dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t[:, None].to(x.dtype)
        return self.body(torch.cat([x, t, torch.cos(0.5 * math.pi * t)], dim=1))


def test_loss_decreases_on_a_gaussian_mixture(vp: fs.VPLinear) -> None:
    gmm = fs.GaussianMixture.random(dim=2, components=4, seed=0)
    torch.manual_seed(0)
    net = TinyMLP()
    dsm = fs.DSMLoss(vp)
    g = torch.Generator().manual_seed(1)
    x0 = gmm.sample(2048, g).float()
    inp = dsm.inputs(x0, generator=g)
    # The Bayes-optimal loss of these draws: the mixture's exact eps(x_t, t), one sample at a time.
    x_t = inp.x_t.double()
    exact = torch.cat([gmm.denoise(x_t[i:i + 1], vp.alpha(ti), vp.sigma(ti))[1] for i, ti in enumerate(inp.t.tolist())])
    optimum = (exact - inp.eps.double()).pow(2).mean().item()

    def eval_loss(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return dsm(model, x0, t=inp.t, eps=inp.eps).item()

    before = eval_loss(net)
    steps = []
    ema, losses = fs.train_denoiser(net, gmm.sample, vp, steps=400, batch_size=256, lr=3e-3, warmup=20, ema=0.99,
                                    seed=0, progress=False, callback=steps.append)
    assert len(losses) == 400 and [s.step for s in steps] == list(range(1, 401))
    assert steps[0].lr == pytest.approx(3e-3 / 20) and steps[-1].lr < 1e-6  # warmup, then cosine to 0
    assert all(math.isfinite(s.grad_norm) for s in steps)
    after = eval_loss(ema)
    # Noise regression on a 4-component 2-D mixture: an untrained network scores ~1 (like eps = 0),
    # the exact denoiser ~0.2 (the noise the posterior cannot resolve). 400 updates get to ~0.3;
    # nothing beats the optimum beyond the sampling noise of 2048 draws.
    assert before > 0.9 and 0.1 < optimum < 0.3
    assert 0.95 * optimum < after < min(0.5 * before, 1.75 * optimum), (before, after, optimum)
    assert sum(losses[-50:]) / 50 < 0.6 * sum(losses[:20]) / 20
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())


def make_data(kind: str):
    pts = torch.randn(20, 2, generator=torch.Generator().manual_seed(2))
    if kind == "tensor":
        return pts, 8
    if kind == "callable":
        return (lambda n, g: torch.randn(n, 2, generator=g) * 0.5 + 1.0), 8
    # A re-iterable yielding (x, label) pairs, like a DataLoader over a TensorDataset.
    return [(pts[i:i + 6], torch.zeros(6)) for i in range(0, 18, 6)], None


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("kind", ["tensor", "callable", "iterable"])
def test_resume_is_bit_exact(tmp_path, vp: fs.VPLinear, kind: str) -> None:
    k = 7
    common = dict(steps=2 * k, lr=1e-2, warmup=3, ema=0.9, seed=3, progress=False)

    def fresh() -> TinyMLP:
        torch.manual_seed(0)
        return TinyMLP(hidden=16, dropout=0.2)  # dropout draws from the global RNG

    data, batch = make_data(kind)
    torch.manual_seed(100)
    net_a = fresh()
    ema_a, losses_a = fs.train_denoiser(net_a, data, vp, batch_size=batch, checkpoint=tmp_path / "a.pt", **common)

    def stop(info: fs.train.TrainStep) -> None:
        if info.step == k:
            raise Interrupt

    torch.manual_seed(100)
    net_b = fresh()
    with pytest.raises(Interrupt):
        fs.train_denoiser(net_b, data, vp, batch_size=batch, checkpoint=tmp_path / "b.pt", checkpoint_every=k,
                          callback=stop, **common)
    assert fs.Checkpoint.load(tmp_path / "b.pt").integer("step") == k
    torch.manual_seed(12345)  # the global RNG moves on in between; resume restores it
    data, batch = make_data(kind)
    net_b = fresh()
    ema_b, losses_b = fs.train_denoiser(net_b, data, vp, batch_size=batch, checkpoint=tmp_path / "b.pt", **common)

    assert losses_b == losses_a and len(losses_a) == 2 * k
    for mine, theirs in ((net_a, net_b), (ema_a, ema_b)):
        sa, sb = mine.state_dict(), theirs.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    ca, cb = fs.Checkpoint.load(tmp_path / "a.pt"), fs.Checkpoint.load(tmp_path / "b.pt")
    assert ca.integer("step") == cb.integer("step") == 2 * k
    assert ca.string("format") == "fewstep.dsm_loss_trainer.v1" and ca.string("options") == cb.string("options")
    keys = ca.tensor_keys()
    assert keys == cb.tensor_keys() and any(key.startswith("optimizer/") for key in keys)
    for key in keys:  # weights, EMA, AdamW state, every generator, the data position, the losses
        assert torch.equal(ca.tensor(key), cb.tensor(key)), key
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]  # atomic writes leave no temporaries

    # Already at `steps`: returns the saved state without training.
    ema_c, losses_c = fs.train_denoiser(fresh(), data, vp, batch_size=batch, checkpoint=tmp_path / "b.pt", **common)
    assert losses_c == losses_a
    assert all(torch.equal(x, y) for x, y in zip(ema_c.state_dict().values(), ema_a.state_dict().values()))


def test_checkpoint_from_another_run_is_refused(tmp_path, vp: fs.VPLinear) -> None:
    data = torch.randn(16, 2)
    path = tmp_path / "run.pt"
    fs.train_denoiser(TinyMLP(hidden=8), data, vp, steps=2, batch_size=4, checkpoint=path, progress=False)
    # Every option is compared (the one check of train/trainer.h), naming the setting and both values ...
    for change, message in (({"prediction": "v"}, 'prediction is "v" here, "eps" in the checkpoint'),
                            ({"lr": 1e-3}, "lr is 0.001 here, 0.0002 in the checkpoint"),
                            ({"ema": 0.5}, "ema_decay is 0.5 here, 0.999 in the checkpoint"),
                            ({"batch_size": 8}, 'data is "tensor(n=16, batch=8)" here')):
        with pytest.raises(ValueError, match=re.escape(message)):
            fs.train_denoiser(TinyMLP(hidden=8), data, vp, **{"steps": 4, "batch_size": 4, **change},
                              checkpoint=path, progress=False)
    # ... except the run's length: a finished run goes on with a longer learning-rate decay.
    ema, losses = fs.train_denoiser(TinyMLP(hidden=8), data, vp, steps=3, batch_size=4, checkpoint=path,
                                    progress=False)
    assert len(losses) == 3
    with pytest.raises(ValueError, match="another network"):
        fs.train_denoiser(TinyMLP(hidden=9), data, vp, steps=4, batch_size=4, checkpoint=path, progress=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        fs.train_denoiser(TinyMLP(hidden=8), data, vp, steps=4, batch_size=4, checkpoint=tmp_path / "junk.pt",
                          progress=False)
    # resume=False starts afresh and overwrites.
    fs.train_denoiser(TinyMLP(hidden=8), data, vp, steps=3, batch_size=4, prediction="v", checkpoint=path,
                      resume=False, progress=False)
    assert '"prediction": "v"' in fs.Checkpoint.load(path).string("options")


def test_progress_bar_shows_loss_and_lr(vp: fs.VPLinear, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FEWSTEP_PROGRESS_INTERVAL", "0")  # captured stderr is a log: a line per update
    fs.train_denoiser(TinyMLP(hidden=8), torch.randn(16, 2), vp, steps=3, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "fewstep dsm_loss" in err and "loss=" in err and "lr=" in err and "3/3" in err


@pytest.mark.parametrize("kwargs, error, message", [
    ({"steps": 0}, ValueError, "steps should be >= 1, got 0"),
    ({"steps": 2.5}, TypeError, "steps should be an int, got float"),
    # The optimiser's options are checked by the C++ optimiser (train/optimizer.h), naming the field.
    ({"lr": -1.0}, ValueError, "LrSchedule.lr must be finite and positive, got -1"),
    ({"lr": float("nan")}, ValueError, "lr should be finite, got nan"),
    ({"min_lr": 1.0}, ValueError, "LrSchedule.min_lr must be in [0, lr = 0.0002], got 1"),
    ({"warmup": -3}, ValueError, "LrSchedule.warmup_steps must be >= 0, got -3"),
    ({"betas": (0.9, 1.0)}, ValueError, "OptimizerOptions.beta2 must be in [0, 1), got 1"),
    ({"weight_decay": -1.0}, ValueError, "OptimizerOptions.weight_decay must be finite and >= 0, got -1"),
    ({"ema": 1.5}, ValueError, "ema should be a decay in [0, 1], got 1.5"),
    ({"batch_size": 0}, ValueError, "batch_size should be >= 1, got 0"),
    ({"batch_size": 17}, ValueError, "batch_size should be at most the number of samples in data (16), got 17"),
    ({"seed": -1}, ValueError, "seed should be >= 0, got -1"),
    ({"checkpoint_every": -1}, ValueError, "TrainLoopOptions.checkpoint_every must be >= 0, got -1"),
    # The loss's settings are checked by the C++ options (dsm_loss.h), naming the setting.
    ({"prediction": "noise"}, ValueError, "prediction must be one of 'eps', 'x0', 'v', 'score', 'flow', got 'noise'"),
    ({"weighting": "snr"}, ValueError, "weighting must be one of 'uniform', 'truncated_snr', 'min_snr', got 'snr'"),
    ({"time_input": "step"}, ValueError, "time_input must be one of 't', 'index', 'sigma', 'lambda', got 'step'"),
    ({"min_snr_gamma": 0.0}, ValueError, "DsmOptions.min_snr_gamma must be finite and positive, got 0"),
    ({"time_scale": 0.0}, ValueError, "time_scale should be non-zero, got 0.0"),
    ({"t_min": 0.0}, ValueError, "t_min should be within the schedule's range [0.001, 1], got 0"),
    ({"t_max": 2.0}, ValueError, "t_max should be within the schedule's range [0.001, 1], got 2"),
    ({"t_min": 0.5, "t_max": 0.2}, ValueError, "t_min should be less than t_max, got t_min = 0.5, t_max = 0.2"),
    ({"time_input": "index"}, ValueError, "index"),  # needs a discrete schedule (message from C++)
    ({"callback": 3}, TypeError, "callback should be callable, got int"),
    ({"checkpoint": 3}, TypeError, "checkpoint should be a path (str or os.PathLike), got int"),
])
def test_bad_arguments_name_the_argument(vp: fs.VPLinear, kwargs: dict, error: type, message: str) -> None:
    args = {"steps": 2, "batch_size": 4, "progress": False}
    args.update(kwargs)
    with pytest.raises(error, match=re.escape(message)):
        fs.train_denoiser(TinyMLP(hidden=8), torch.randn(16, 2), vp, **args)


def test_bad_data_and_net(vp: fs.VPLinear) -> None:
    net = TinyMLP(hidden=8)
    with pytest.raises(ValueError, match=r"data should be a tensor \[N, \.\.\.\] with at least 2 dimensions"):
        fs.train_denoiser(net, torch.randn(16), vp, steps=1, progress=False)
    with pytest.raises(TypeError, match="data should be a floating-point tensor"):
        fs.train_denoiser(net, torch.zeros(16, 2, dtype=torch.int64), vp, steps=1, progress=False)
    with pytest.raises(TypeError, match="data should be a tensor .* got int"):
        fs.train_denoiser(net, 3, vp, steps=1, progress=False)
    with pytest.raises(TypeError, match="not a one-shot iterator"):
        fs.train_denoiser(net, iter([torch.randn(4, 2)]), vp, steps=1, progress=False)
    with pytest.raises(ValueError, match="batch_size applies to tensor or callable data"):
        fs.train_denoiser(net, [torch.randn(4, 2)], vp, steps=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="data is an empty iterable"):
        fs.train_denoiser(net, [], vp, steps=1, progress=False)
    with pytest.raises(ValueError, match="the network has no parameters that require grad"):
        fs.train_denoiser(torch.nn.Identity(), torch.randn(16, 2), vp, steps=1, batch_size=4, progress=False)
    with pytest.raises(TypeError, match="schedule should be a fewstep schedule"):
        fs.train_denoiser(net, torch.randn(16, 2), "vp", steps=1, batch_size=4, progress=False)
    with pytest.raises(RuntimeError, match="the loss is nan at update 1"):
        fs.train_denoiser(net, torch.full((16, 2), float("nan")), vp, steps=1, batch_size=4, progress=False)
    dsm = fs.DSMLoss(vp)
    with pytest.raises(ValueError, match=r"x0 should be a batch \[B, \.\.\.\] with at least 2 dimensions"):
        dsm(net, torch.randn(4))
    with pytest.raises(ValueError, match=r"net\(x_t, t\) returned shape \(4, 3\), expected \(4, 2\)"):
        dsm(lambda x, t: torch.zeros(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"t should have shape \(4,\), got \(3,\)"):
        dsm(net, torch.randn(4, 2), t=torch.full((3,), 0.5))
    with pytest.raises(ValueError, match=r"t must be a finite time in \[t_min, t_max\].*got t=2"):  # C++ check
        dsm(net, torch.randn(4, 2), t=torch.full((4,), 2.0))
    with pytest.raises(TypeError, match="generator should be a torch.Generator, got int"):
        dsm(net, torch.randn(4, 2), 3)


# ----------------------------------------------------------------------------------------------
# DistributedDataParallel over gloo: DSMLoss inside an ordinary DDP loop.

DDP_STEPS = 4
DDP_BATCH = 16  # the full batch; each of the two ranks trains on half of it


def ddp_batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x0, t, eps) of every step for the full batch, float64."""
    g = torch.Generator().manual_seed(21)
    out = []
    for _ in range(DDP_STEPS):
        x0 = torch.randn(DDP_BATCH, 2, generator=g, dtype=torch.float64)
        t = 1e-3 + (1 - 1e-3) * torch.rand(DDP_BATCH, generator=g, dtype=torch.float64)
        eps = torch.randn(DDP_BATCH, 2, generator=g, dtype=torch.float64)
        out.append((x0, t, eps))
    return out


def ddp_train(net: torch.nn.Module, rank: Optional[int], world: int) -> None:
    """The user's loop: plain SGD on DSMLoss, over this rank's shard (or the whole batch)."""
    dsm = fs.DSMLoss(fs.VPLinear(), prediction="v", weighting="min_snr")
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for x0, t, eps in ddp_batches():
        if rank is not None:
            shard = slice(rank * DDP_BATCH // world, (rank + 1) * DDP_BATCH // world)
            x0, t, eps = x0[shard], t[shard], eps[shard]
        loss = dsm(net, x0, t=t, eps=eps)
        opt.zero_grad()
        loss.backward()
        opt.step()


def ddp_net() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP(hidden=16, dtype=torch.float64)


@needs_gloo
def test_ddp_two_processes_gloo_match_one_process(tmp_path) -> None:
    world = 2
    states = ddp_trained_states(tmp_path, ddp_net, ddp_train, world)
    single = ddp_net()
    ddp_train(single, None, world)
    initial = ddp_net().state_dict()
    for key, ref in single.state_dict().items():
        # Both ranks apply the same all-reduced gradient: bit-identical weights.
        assert torch.equal(states[0][key], states[1][key]), key
        # DDP averages the two half-batch means; one process takes the mean over the whole batch.
        # Equal sums in another order: float64 round-off ~1e-16 relative per gradient entry,
        # carried through 4 SGD steps (lr 0.05) of a 16-unit MLP -> ~1e-15; 1e-12 leaves margin.
        torch.testing.assert_close(states[0][key], ref, rtol=0, atol=1e-12)
        assert not torch.equal(ref, initial[key])  # training moved every tensor


def test_the_documented_example_runs(tmp_path, monkeypatch) -> None:
    """docs/python_training.md's first example, as written (it also runs again, resuming at once)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "python_training.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    first: dict = {}
    exec(compile(code, "docs/python_training.md", "exec"), first)
    assert first["x"].shape == (512, 2) and torch.isfinite(first["x"]).all()
    assert first["one_step"].shape == (512, 2) and torch.isfinite(first["one_step"]).all()
    assert first["trainer"].step_count == 300 and (tmp_path / "runs" / "ct.ckpt").is_file()
    again: dict = {}
    exec(compile(code.split("# The same run as a trainer")[0], "docs/python_training.md", "exec"), again)
    assert again["losses"] == first["losses"]  # resumed from the finished checkpoint, not retrained


# ----------------------------------------------------------------------------------------------
# The C++ trainers through the same binding (fs.Trainer.<kind>): TorchScript networks, trained in place.


class ScriptNet(torch.nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.l1 = torch.nn.Linear(4, 16, dtype=torch.float64)
        self.l2 = torch.nn.Linear(16, 2, dtype=torch.float64)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x.dtype)[:, None]
        return self.l2(torch.tanh(self.l1(torch.cat([x, t, torch.cos(t)], 1))))


def test_cpp_trainers_have_the_same_shape(tmp_path, vp: fs.VPLinear) -> None:
    points = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def denoiser(seed: int = 0, **options) -> fs.Trainer:
        settings = {**dict(lr=1e-2, total_steps=10, ema_decay=0.9, seed=1, prediction="v"), **options}
        return fs.Trainer.denoiser(torch.jit.script(ScriptNet(seed)), vp, fs.ShuffledBatches(points, None, 16, 2),
                                   **settings)

    full = denoiser()
    full.train(10, progress=False)
    assert full.kind == "denoiser" and full.step_count == 10 and full.options["prediction"] == "v"
    first = denoiser()
    first.train(4, checkpoint=tmp_path / "d.ckpt", progress=False)
    resumed = denoiser(seed=5)  # other initial weights: everything comes from the checkpoint
    assert resumed.resume(tmp_path / "d.ckpt") and resumed.step_count == 4
    resumed.train(6, progress=False)
    a, b = full.export(), resumed.export()
    assert isinstance(a, torch.jit.ScriptModule)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key
    with pytest.raises(ValueError, match=re.escape("lr is 0.005 here, 0.01 in the checkpoint")):
        denoiser(lr=5e-3).load_checkpoint(tmp_path / "d.ckpt")
    with pytest.raises(ValueError, match="unknown option 'learning_rate'"):
        denoiser(learning_rate=1.0)
    with pytest.raises(TypeError, match="net should be a torch.jit.ScriptModule"):
        fs.Trainer.denoiser(ScriptNet(), vp, fs.ShuffledBatches(points, None, 16, 2))

    # The network is the caller's ScriptModule, trained in place.
    net = torch.jit.script(ScriptNet())
    before = [p.detach().clone() for p in net.parameters()]
    fs.Trainer.denoiser(net, vp, fs.ShuffledBatches(points, None, 16, 2), lr=1e-2).train(2, progress=False)
    assert all(not torch.equal(p, q) for p, q in zip(net.parameters(), before))

    # Progressive rounds, consistency distillation and knowledge distillation: the same calls.
    data = fs.ShuffledBatches(points, None, 16, 2)
    rounds = []
    pd = fs.Trainer.progressive(torch.jit.script(ScriptNet()), vp, data, initial_steps=4, final_steps=2,
                                iterations_per_round=2, teacher_prediction="eps", student_prediction="v")
    pd.train(4, progress=False, callback=lambda s: rounds.append(s.extra["N"]))
    assert rounds == [4, 4, 2, 2] and pd.planned_steps == 4
    cd = fs.Trainer.consistency(torch.jit.script(ScriptNet()), vp, data, teacher=torch.jit.script(ScriptNet(3)),
                                method="cd", num_points=5)
    assert math.isfinite(cd.step().loss) and cd.step().extra["N"] == 5
    # sCD: the forward-mode JVP runs through a scripted Python network too.
    scd = fs.Trainer.consistency(torch.jit.script(ScriptNet()), vp, data, teacher=torch.jit.script(ScriptNet(3)),
                                 method="scd", scm_warmup_steps=4)
    stats = [scd.step() for _ in range(3)]
    assert all(math.isfinite(s.loss) for s in stats) and [s.extra["warmup"] for s in stats] == [0.0, 0.25, 0.5]
    kd = fs.Trainer.knowledge(torch.jit.script(ScriptNet()), vp, points, 0.5 * points, timesteps=[1.0, 0.001],
                              batch=16)
    assert kd.train(2, progress=False)["last_step"] == 2
    with pytest.raises(ValueError, match="does not support data parallelism"):
        images = torch.zeros(32, 1, 4, 4)
        clf = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)))
        fs.Trainer.classifier(clf, fs.ShuffledBatches(images, torch.arange(32) % 3, 8, 0)).set_data_parallel(
            0, 2, lambda tensors: None)
