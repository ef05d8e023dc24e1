"""End-to-end tests of `fewstep distill progressive|kd|guidance` (build/bin/fewstep via subprocess).

Distils the shipped 2-D mixture teacher in a few dozen iterations: students are exported per round
with their own grid, `fewstep sample` runs them in exactly N network calls, an interrupted run
resumed with --resume ends bit-identical to an uninterrupted one, KD rollouts are cached and
reused, and bad inputs get messages naming the flag or file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FEWSTEP_CLI") or REPO / "build" / "bin" / "fewstep")
TEACHER = REPO / "models" / "gmm2d-mlp-eps.pt"
COND_TEACHER = REPO / "models" / "fmnist-unet-cond.pt"

CANDIDATES = ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "deis")

pytestmark = pytest.mark.skipif(not BIN.is_file(), reason=f"{BIN} is not built")

PD = ["distill", "progressive", "--teacher", str(TEACHER), "--initial-steps", "4", "--final-steps", "1",
      "--iterations", "20", "--batch", "64", "--export-from", "0", "--checkpoint-every", "10", "--threads", "1"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"fewstep {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def pd_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pd")
    run(*PD, "--out", str(out))
    return out


def test_progressive_exports_every_round_with_its_grid(pd_run: Path) -> None:
    for n in (4, 2, 1):
        side = json.loads((pd_run / f"student-{n}step.json").read_text())
        grid = side["sampler"]["timesteps"]
        assert side["sampler"]["solver"] in CANDIDATES and len(grid) == n + 1
        assert grid[0] == pytest.approx(1.0) and grid[-1] == pytest.approx(1e-3)
        assert all(a > b for a, b in zip(grid, grid[1:]))
        assert side["prediction"] == "v" and side["distillation"]["method"] == "progressive"
        assert side["distillation"]["steps"] == n
        assert (pd_run / f"student-{n}step.md").read_text().startswith(f"# student-{n}step")
        torch.jit.load(str(pd_run / f"student-{n}step.pt"))


def test_sample_runs_a_student_on_its_own_grid(pd_run: Path, tmp_path: Path) -> None:
    for n in (2, 1):
        solver = json.loads((pd_run / f"student-{n}step.json").read_text())["sampler"]["solver"]
        proc = run("sample", "--model", str(pd_run / f"student-{n}step.pt"), "--n", "100", "--out",
                   str(tmp_path / "s.png"))
        assert f"{solver}, {n} step{'s' * (n > 1)}, {n} NFE" in proc.stderr, proc.stderr
    # Explicit flags still choose another solver and grid.
    proc = run("sample", "--model", str(pd_run / "student-2step.pt"), "--solver", "dpmpp_2m", "--steps", "5",
               "--n", "10", "--out", str(tmp_path / "s.png"))
    assert "dpmpp_2m, 5 steps, 5 NFE" in proc.stderr


def test_progressive_resume_is_bit_identical(pd_run: Path, tmp_path: Path) -> None:
    # Stop after round 1 (step 30 of 60) by interrupting: run to step 30 with a copy of the flags is not
    # possible, so resume from the full run's checkpoint history instead: a fresh run stopped by SIGTERM.
    out = tmp_path / "split"
    proc = subprocess.Popen([str(BIN), *PD, "--out", str(out), "--log-every", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step 25/"):
            proc.terminate()
            break
    proc.wait(timeout=60)
    assert proc.returncode != 0
    state = json.loads((out / "state.json").read_text())
    assert 0 < state["step"] < 60
    run(*PD, "--out", str(out), "--resume")
    for n in (4, 2, 1):
        a = torch.jit.load(str(pd_run / f"student-{n}step.pt")).state_dict()
        b = torch.jit.load(str(out / f"student-{n}step.pt")).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{n}-step student differs after resume"


def test_progressive_records_the_measured_solver_of_each_student(pd_run: Path, tmp_path: Path) -> None:
    # --student-solver auto (the default) measures the candidates against the teacher and records the
    # winner: the library's check from Python, with the same defaults, finds the same one.
    import fewstep as fs
    assert tuple(fs.grid_solver_candidates()) == CANDIDATES
    for n in (4, 2, 1):
        path = pd_run / f"student-{n}step.pt"
        recorded = json.loads(path.with_suffix(".json").read_text())["sampler"]["solver"]
        before = path.with_suffix(".json").read_bytes()
        choice = fs.choose_student_solver(path, TEACHER, write=False)
        assert choice["solver"] == recorded, (n, choice)
        assert path.with_suffix(".json").read_bytes() == before  # write=False leaves the file alone
        errors = {t["solver"]: t["error"].median for t in choice["trials"]}
        assert set(errors) == set(CANDIDATES)
        assert errors[recorded] <= min(errors.values()) * 1.01
        if n == 1:  # one step of every candidate is the same DDIM step
            assert recorded == "ddim" and max(errors.values()) <= min(errors.values()) * (1 + 1e-5)
    # A named solver is recorded as given; one a student cannot use is a usage error naming it.
    one_round = [a if a != "1" or PD[i - 1] != "--final-steps" else "4" for i, a in enumerate(PD)]
    run(*one_round, "--student-solver", "unipc", "--out", str(tmp_path / "named"))
    assert json.loads((tmp_path / "named" / "student-4step.json").read_text())["sampler"]["solver"] == "unipc"
    for bad, why in (("heun", "makes 2 evaluations per step"), ("euler_maruyama", "is stochastic"),
                     ("nonsense", "is not a registered solver")):
        proc = run(*PD, "--student-solver", bad, "--out", str(tmp_path / bad), check=False)
        assert proc.returncode == 2 and f"--student-solver: '{bad}'" in proc.stderr and why in proc.stderr, proc.stderr


def test_students_do_not_inherit_the_teachers_evaluation(tmp_path: Path) -> None:
    # A teacher's sidecar may record its own FD ("evaluation"); a student's sidecar must not claim it.
    import shutil
    import fewstep as fs
    teacher = tmp_path / "teacher.pt"
    shutil.copy(TEACHER, teacher)
    side = json.loads(TEACHER.with_suffix(".json").read_text())
    side["evaluation"] = {"fd_fmnist": 1.0}
    teacher.with_suffix(".json").write_text(json.dumps(side))
    fs.upgrade_model_file(teacher)
    run("distill", "progressive", "--teacher", str(teacher), "--initial-steps", "2", "--final-steps", "2",
        "--iterations", "2", "--batch", "8", "--threads", "1", "--student-solver", "ddim", "--out", str(tmp_path / "o"))
    assert "evaluation" not in json.loads((tmp_path / "o" / "student-2step.json").read_text())


def test_resume_refuses_other_flags(pd_run: Path) -> None:
    args = [a if a != "20" else "30" for a in PD]
    proc = run(*args, "--out", str(pd_run), "--resume", check=False)
    assert proc.returncode == 2 and "--iterations is 30 here, 20 in the checkpoint" in proc.stderr
    proc = run(*PD, "--out", str(pd_run), check=False)
    assert proc.returncode == 2 and "pass --resume" in proc.stderr


def test_progressive_refines_a_student_against_more_teacher_steps(pd_run: Path, tmp_path: Path) -> None:
    # --student-init starts from an earlier student (here the 2-step one; lr ~ 0 and no EMA keep its
    # weights), --first-round-substeps is recorded in the exported student's card.
    init = pd_run / "student-2step.pt"
    args = ["distill", "progressive", "--teacher", str(TEACHER), "--initial-steps", "2", "--final-steps", "2",
            "--iterations", "3", "--batch", "16", "--threads", "1", "--lr", "1e-12", "--ema", "0",
            "--first-round-substeps", "8", "--student-init", str(init), "--export-from", "0"]
    run(*args, "--out", str(tmp_path / "r"))
    side = json.loads((tmp_path / "r" / "student-2step.json").read_text())
    assert side["distillation"]["first_round_substeps"] == 8
    assert side["distillation"]["student_init"] == str(init)
    a = torch.jit.load(str(init)).state_dict()
    b = torch.jit.load(str(tmp_path / "r" / "student-2step.pt")).state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    # Bad values name the flag and the value.
    proc = run(*[a if a != "8" else "3" for a in args], "--out", str(tmp_path / "odd"), check=False)
    assert proc.returncode == 2 and "--first-round-substeps must be even" in proc.stderr and "got 3" in proc.stderr
    proc = run(*args, "--student-prediction", "x0", "--out", str(tmp_path / "x0"), check=False)
    assert proc.returncode == 2 and f"--student-init '{init}' predicts v" in proc.stderr, proc.stderr


def test_kd_caches_rollouts(tmp_path: Path) -> None:
    args = ["distill", "kd", "--teacher", str(TEACHER), "--steps", "2", "--pairs", "256", "--teacher-steps", "10",
            "--iterations", "20", "--batch", "64", "--cache-dir", str(tmp_path / "cache"), "--threads", "1"]
    first = run(*args, "--out", str(tmp_path / "a"))
    assert "made and cached 256 pairs" in first.stderr
    second = run(*args, "--out", str(tmp_path / "b"))
    assert "loaded 256 pairs" in second.stderr
    side = json.loads((tmp_path / "b" / "student-2step.json").read_text())
    assert side["distillation"]["method"] == "kd" and len(side["sampler"]["timesteps"]) == 3
    a = torch.jit.load(str(tmp_path / "a" / "student-2step.pt")).state_dict()
    b = torch.jit.load(str(tmp_path / "b" / "student-2step.pt")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same pairs, same seed: same student


def test_bad_inputs_name_the_flag_or_file(tmp_path: Path) -> None:
    proc = run("distill", "guidance", "--teacher", str(TEACHER), "--out", str(tmp_path / "g"), check=False)
    assert proc.returncode == 2 and "is not class-conditional" in proc.stderr
    proc = run("distill", "progressive", "--teacher", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "p"),
               check=False)
    assert proc.returncode != 0 and "missing.pt" in proc.stderr
    proc = run(*PD[:-2], "--guidance-range", "1,3", "--out", str(tmp_path / "q"), check=False)
    assert proc.returncode == 2 and "--guidance-range needs a teacher with a guidance input" in proc.stderr
    proc = run("distill", check=False)
    assert proc.returncode != 0 and "progressive" in proc.stderr + proc.stdout


@pytest.mark.skipif(not COND_TEACHER.is_file(), reason="no shipped conditional teacher")
def test_sample_conditional_teacher_with_guidance(tmp_path: Path) -> None:
    proc = run("sample", "--model", str(COND_TEACHER), "--class", "3", "--guidance", "2", "--steps", "2",
               "--n", "4", "--out", str(tmp_path / "c.png"))
    assert "2 steps" in proc.stderr
    proc = run("sample", "--model", str(TEACHER), "--class", "3", "--n", "4", "--out", str(tmp_path / "c.png"),
               check=False)
    assert proc.returncode == 2 and "is not class-conditional" in proc.stderr


def test_consistency_start_sigma(tmp_path: Path) -> None:
    import fewstep as fs

    args = ["distill", "consistency", "--method", "ect", "--teacher", str(TEACHER), "--iterations", "2",
            "--batch", "16", "--threads", "1"]
    run(*args, "--start-sigma", "0", "--out", str(tmp_path / "top"))
    side = json.loads((tmp_path / "top" / "student-1step.json").read_text())
    assert side["sampler"]["timesteps"][0] == 1.0 and side["distillation"]["start_sigma"] == 0
    run(*args, "--start-sigma", "40", "--intermediate-sigma", "2", "--out", str(tmp_path / "mid"))
    side = json.loads((tmp_path / "mid" / "student-2step.json").read_text())
    assert side["sampler"]["timesteps"] == fs.consistency_timesteps(fs.VPLinear(), 40, [2]).tolist()
    proc = run(*args, "--start-sigma", "0.5", "--out", str(tmp_path / "bad"), check=False)
    assert proc.returncode == 2 and ("--start-sigma 0.5 with --intermediate-sigma 0.8 on VPLinear(" in proc.stderr
                                     and "intermediate_sigmas[0]=0.8 must be positive and below the start level (0.5)"
                                     in proc.stderr), proc.stderr
    assert not (tmp_path / "bad").exists()  # refused before any training or output
    assert proc.stderr.startswith("fewstep distill consistency: "), proc.stderr  # the method's name too
    proc = run(*args, "--start-sigma", "nan", "--out", str(tmp_path / "nan"), check=False)
    assert proc.returncode == 2 and "--start-sigma: (must be >= 0, got nan) AND (must be a finite number" in proc.stderr
    assert proc.stderr.startswith("fewstep distill consistency: ") and \
        "Run 'fewstep distill consistency --help'" in proc.stderr, proc.stderr


@pytest.mark.parametrize("method", ["cd", "ict"])
def test_consistency_students_sample_in_one_and_two_calls(method: str, tmp_path: Path) -> None:
    import fewstep as fs

    args = ["distill", "consistency", "--method", method, "--teacher", str(TEACHER), "--iterations", "30",
            "--batch", "64", "--checkpoint-every", "15", "--threads", "1", "--num-points", "6", "--ict-s0", "4",
            "--ict-s1", "16", "--out", str(tmp_path / "a")]
    run(*args)
    for n in (1, 2):
        path = tmp_path / "a" / f"student-{n}step.pt"
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["sampler"]["solver"] == "consistency" and len(side["sampler"]["timesteps"]) == n + 1
        assert side["consistency"]["sigma_data"] == 0.5 and side["distillation"]["consistency_method"] == method
        proc = run("sample", "--model", str(path), "--n", "50", "--out", str(tmp_path / "s.png"))
        assert f"consistency, {n} step{'s' * (n > 1)}, {n} NFE" in proc.stderr, proc.stderr
        out = fs.sample(str(path), torch.randn(20, 2), seeds=list(range(20)))
        assert out.nfe == n and torch.isfinite(out.x).all()
    # The 2-step grid re-noises at sigma/alpha = --intermediate-sigma (0.8 by default), and says so.
    two = json.loads((tmp_path / "a" / "student-2step.json").read_text())
    one = json.loads((tmp_path / "a" / "student-1step.json").read_text())
    assert two["distillation"]["intermediate_sigma"] == 0.8 and "intermediate_sigma" not in one["distillation"]
    # f(x, t_min) = x exactly, through the model file.
    model = fs.load_model_file(str(tmp_path / "a" / "student-1step.pt"))["denoiser"]
    assert float(model.schedule.lambda_(two["sampler"]["timesteps"][1])) == pytest.approx(-math.log(0.8), abs=1e-9)
    # Both grids start where sigma/alpha = --start-sigma (80 by default; VP linear's top is about 152).
    for side, mid in ((one, []), (two, [0.8])):
        assert side["distillation"]["start_sigma"] == 80
        assert side["sampler"]["timesteps"] == fs.consistency_timesteps(model.schedule, 80, mid).tolist()
        assert float(model.schedule.lambda_(side["sampler"]["timesteps"][0])) == pytest.approx(-math.log(80), abs=1e-9)
    x = torch.randn(5, 2)
    assert torch.equal(model(x, model.schedule.t_min)[0], x)
    # Stopped mid-run and resumed: the same exported student as an uninterrupted run.
    proc = subprocess.Popen([str(BIN), *args[:-1], str(tmp_path / "b"), "--log-every", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step 20/"):
            proc.terminate()
            break
    proc.wait(timeout=60)
    assert proc.returncode != 0 and 0 < json.loads((tmp_path / "b" / "state.json").read_text())["step"] < 30
    # A student exported at a checkpoint says in its card how far its run had gone.
    done = json.loads((tmp_path / "b" / "student-1step.json").read_text())["training"]["steps_done"]
    assert 0 < done < 30
    assert f"| status | in progress: {done} / 30 steps |" in (
        tmp_path / "b" / "student-1step.md").read_text()
    assert "| status | complete: 30 / 30 steps |" in (tmp_path / "a" / "student-1step.md").read_text()
    run(*args[:-1], str(tmp_path / "b"), "--resume")
    a = torch.jit.load(str(tmp_path / "a" / "student-1step.pt")).state_dict()
    b = torch.jit.load(str(tmp_path / "b" / "student-1step.pt")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_consistency_training_from_scratch_does_not_read_the_teacher_weights(pd_run: Path, tmp_path: Path) -> None:
    """ct/ict with --init random use the model file for its architecture, schedule and data only: two model
    files of one architecture with different weights (the teacher and a distilled student of it) give the
    same student, bit for bit; the default (--init auto: the teacher's weights) does not."""
    import fewstep as fs

    common = ["distill", "consistency", "--method", "ict", "--iterations", "12", "--batch", "32",
              "--checkpoint-every", "0", "--threads", "1", "--ict-s0", "4", "--ict-s1", "16"]
    templates = {"t": TEACHER, "s": pd_run / "student-2step.pt"}
    for key, template in templates.items():
        run(*common, "--init", "random", "--teacher", str(template), "--out", str(tmp_path / key))
        run(*common, "--teacher", str(template), "--out", str(tmp_path / (key + "-init")))
    weights = {k: torch.jit.load(str(tmp_path / k / "student-1step.pt")).state_dict()
               for k in ("t", "s", "t-init", "s-init")}
    assert all(torch.equal(weights["t"][k], weights["s"][k]) for k in weights["t"])
    a, b = weights["t-init"], weights["s-init"]  # the student wraps the template's network (its keys may differ)
    assert set(a) != set(b) or not all(torch.equal(a[k], b[k]) for k in a)
    side = json.loads((tmp_path / "t" / "student-1step.json").read_text())
    assert side["distillation"]["init"] == "random" and "output_map" not in side["network"]
    out = fs.sample(str(tmp_path / "t" / "student-2step.pt"), torch.randn(20, 2), seeds=list(range(20)))
    assert out.nfe == 2 and torch.isfinite(out.x).all()
    ect = [a if a != "ict" else "ect" for a in common]
    proc = run(*ect, "--init", "random", "--teacher", str(TEACHER), "--out", str(tmp_path / "e"), check=False)
    assert proc.returncode == 2 and "--init random" in proc.stderr and "ect" in proc.stderr


def both_starts(common: list, tmp_path: Path) -> tuple:
    """Runs `fewstep <common>` with the default start (--init auto) and with --init teacher; returns both
    1-step students' sidecars and median coupled errors against the teacher's 200-step solve from the same
    x_T (keyed "auto" and "teacher"), and that (x_T, reference)."""
    import fewstep as fs

    run(*common, "--out", str(tmp_path / "auto"))
    run(*common, "--init", "teacher", "--out", str(tmp_path / "teacher"))
    x_T = fs.randn((2000, 2), seeds=list(range(2000)))
    reference = fs.sample(str(TEACHER), x_T, solver="dpmpp_2m", steps=200).x
    side, err = {}, {}
    for key in ("auto", "teacher"):
        path = tmp_path / key / "student-1step.pt"
        side[key] = json.loads(path.with_suffix(".json").read_text())
        err[key] = fs.coupled_error(fs.sample(str(path), x_T, seeds=list(range(2000))).x, reference).median
    return side, err, (x_T, reference)


def test_ect_from_an_eps_teacher_starts_from_its_weights(tmp_path: Path) -> None:
    """An eps teacher wrapped as a consistency function (--init teacher) is exact at iteration 0 but ill
    conditioned: its x0 = (x - sigma eps)/alpha amplifies the network's output by sigma/alpha at high noise,
    and ECT barely moves its one-step map from the teacher's blurred mean. The default for an eps teacher
    (--init auto = weights) reads the teacher's weights as F and learns the one-step map in the same
    1000 iterations (measured: coupled error 0.07 against 0.92; docs/distillation.md)."""
    import fewstep as fs

    common = ["distill", "consistency", "--method", "ect", "--teacher", str(TEACHER), "--iterations", "1000",
              "--batch", "128", "--lr", "1e-3", "--seed", "0", "--checkpoint-every", "0", "--threads", "1"]
    side, err, (x_T, reference) = both_starts(common, tmp_path)
    assert side["auto"]["distillation"]["init"] == "weights" and "output_map" not in side["auto"]["network"]
    assert side["teacher"]["distillation"]["init"] == "teacher"
    assert side["teacher"]["network"]["output_map"]["from"] == "eps"
    one_step_teacher = fs.coupled_error(fs.sample(str(TEACHER), x_T, solver="ddim", steps=1).x, reference).median
    assert err["auto"] < 0.25 * err["teacher"], err
    assert err["auto"] < 0.25 * one_step_teacher, (err["auto"], one_step_teacher)


def test_scd_distils_in_continuous_time_and_records_its_settings(tmp_path: Path) -> None:
    """sCD (sCM's continuous-time objective, one forward-mode JVP per step) from the eps teacher's weights:
    1000 iterations bring the 1-step student's median coupled error well below the teacher's own 1-step
    DDIM (measured: 0.29 against 0.68; ECT reaches 0.07 in as many steps here, docs/distillation.md), and
    the sidecar records the sCM settings."""
    import fewstep as fs

    run("distill", "consistency", "--method", "scd", "--teacher", str(TEACHER), "--iterations", "1000", "--batch",
        "128", "--lr", "1e-4", "--seed", "0", "--checkpoint-every", "0", "--threads", "1", "--scm-warmup", "100",
        "--out", str(tmp_path))
    side = json.loads((tmp_path / "student-1step.json").read_text())
    d = side["distillation"]
    assert d["consistency_method"] == "scd" and d["init"] == "weights"
    assert d["scm_warmup"] == 100 and d["scm_tangent_c"] == 0.1 and d["scm_adaptive_weight"] is True
    assert (d["p_mean"], d["p_std"]) == (-1.1, 2.0)
    x_T = fs.randn((2000, 2), seeds=list(range(2000)))
    reference = fs.sample(str(TEACHER), x_T, solver="dpmpp_2m", steps=200).x
    student = fs.coupled_error(fs.sample(str(tmp_path / "student-1step.pt"), x_T).x, reference).median
    teacher = fs.coupled_error(fs.sample(str(TEACHER), x_T, solver="ddim", steps=1).x, reference).median
    assert student < 0.6 * teacher, (student, teacher)


def test_pd_and_kd_from_an_eps_teacher_start_from_its_weights(tmp_path: Path) -> None:
    """Progressive distillation 4 -> 1 of the eps teacher: the default start (--init auto = weights, the
    teacher's network read as v) ends with a better 1-step student than the exact wrapper (--init teacher),
    whose x0 moves by sigma/alpha per unit of its output (measured: coupled error 0.16 against 0.38 after
    300 iterations per round; on the 16-D mixture 0.098 against 0.98). kd records its start likewise."""
    import fewstep as fs

    common = ["distill", "progressive", "--teacher", str(TEACHER), "--initial-steps", "4", "--final-steps", "1",
              "--iterations", "300", "--batch", "128", "--lr", "1e-3", "--ema", "0.99", "--export-from", "0",
              "--checkpoint-every", "0", "--threads", "1"]
    side, err, _ = both_starts(common, tmp_path)
    assert side["auto"]["distillation"]["init"] == "weights" and "output_map" not in side["auto"]["network"]
    assert side["teacher"]["distillation"]["init"] == "teacher"
    assert side["teacher"]["network"]["output_map"]["to"] == "v"
    assert err["auto"] < err["teacher"] / 1.5, err
    proc = run(*common, "--init", "weights", "--student-init", str(tmp_path / "auto" / "student-2step.pt"),
               "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "--init" in proc.stderr and "--student-init" in proc.stderr, proc.stderr
    kd = ["distill", "kd", "--teacher", str(TEACHER), "--steps", "1", "--pairs", "64", "--teacher-steps", "4",
          "--iterations", "2", "--batch", "16", "--checkpoint-every", "0", "--threads", "1", "--no-cache"]
    run(*kd, "--out", str(tmp_path / "kd"))
    side = json.loads((tmp_path / "kd" / "student-1step.json").read_text())
    assert side["distillation"]["init"] == "weights" and "output_map" not in side["network"]


def test_micro_residual_then_joint_samples_and_resumes(tmp_path: Path) -> None:
    """`fewstep distill micro` on the 2-D teacher's exact mixture: residual, then joint from it."""
    import fewstep as fs

    common = ["distill", "micro", "--teacher", str(TEACHER), "--exact", "--trajectories", "128", "--segments", "16",
              "--substeps", "4", "--trajectory-dtype", "float64", "--batch", "32", "--threads", "1",
              "--cache-dir", str(tmp_path / "cache")]
    run(*common, "--mode", "residual", "--iterations", "40", "--lr", "1e-3", "--out", str(tmp_path / "res"))
    res = tmp_path / "res" / "student.pt"
    joint_args = [*common, "--mode", "joint", "--init", str(res), "--iterations", "60", "--budget-min", "3",
                  "--budget-max", "5", "--checkpoint-every", "5"]
    proc = run(*joint_args, "--out", str(tmp_path / "a"))
    assert "loaded 128 trajectories" in proc.stderr  # the cache is reused
    joint = tmp_path / "a" / "student.pt"
    sampler = fs.MicroSampler.load(str(joint))
    assert sampler.info["mode"] == "joint" and sampler.step_size_parameters > 0 and sampler.residual_parameters > 0
    assert "exact GaussianMixture::random(2" in sampler.info["teacher"]
    # The network teacher is not the exact mixture the sampler was distilled from: refused, clearly.
    proc = run("sample", "--model", str(TEACHER), "--micro", str(joint), "--steps", "5", "--n", "20", "--out",
               str(tmp_path / "m.png"), check=False)
    assert proc.returncode == 2 and "different teacher" in proc.stderr, proc.stderr
    # Stopped mid-run and resumed: the same sampler as the uninterrupted run.
    proc = subprocess.Popen([str(BIN), *joint_args, "--out", str(tmp_path / "b"), "--log-every", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step 20/"):
            proc.terminate()
            break
    proc.wait(timeout=60)
    assert proc.returncode != 0 and 0 < json.loads((tmp_path / "b" / "state.json").read_text())["step"] < 60
    run(*joint_args, "--out", str(tmp_path / "b"), "--resume")
    ta = torch.jit.load(str(joint)).state_dict()
    tb = torch.jit.load(str(tmp_path / "b" / "student.pt")).state_dict()
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    proc = run(*common, "--mode", "joint", "--init", str(tmp_path / "missing.pt"), "--iterations", "2", "--out",
               str(tmp_path / "c"), check=False)
    assert proc.returncode == 2 and "missing.pt" in proc.stderr
    proc = run(*common[:3], str(REPO / "models" / "fmnist-unet-eps.pt"), "--exact", "--iterations", "2", "--out",
               str(tmp_path / "d"), check=False)
    assert proc.returncode == 2 and "--exact" in proc.stderr
    # Learned coefficients over two previous evaluations: joint from scratch; the file records the head's
    # kind and depth.
    run(*common, "--mode", "joint", "--history", "--history-depth", "2", "--residual-head", "coefficients",
        "--iterations", "3", "--budget-min", "3", "--budget-max", "4", "--out", str(tmp_path / "e"))
    heads = fs.MicroSampler.load(str(tmp_path / "e" / "student.pt")).info["heads"]
    assert heads["residual_kind"] == "coefficients" and heads["history"] and heads["history_depth"] == 2
    # ... and a hybrid head started from it (its network part small and zero at the start).
    run(*common, "--mode", "joint", "--history", "--history-depth", "2", "--residual-head", "hybrid", "--width", "8",
        "--blocks", "1", "--init", str(tmp_path / "e" / "student.pt"), "--iterations", "2", "--budget-min", "3",
        "--budget-max", "3", "--out", str(tmp_path / "h"))
    assert fs.MicroSampler.load(str(tmp_path / "h" / "student.pt")).info["heads"]["residual_kind"] == "hybrid"
    proc = run(*common, "--history", "--history-depth", "4", "--out", str(tmp_path / "g"), check=False)
    assert proc.returncode == 2 and "--history-depth" in proc.stderr and "4" in proc.stderr, proc.stderr
    proc = run(*common, "--residual-head", "linear", "--out", str(tmp_path / "f"), check=False)
    assert proc.returncode == 2 and "--residual-head" in proc.stderr and "linear" in proc.stderr, proc.stderr
    proc = run(*common, "--loss", "l1", "--out", str(tmp_path / "f"), check=False)
    assert proc.returncode == 2 and "--loss" in proc.stderr and "l1" in proc.stderr, proc.stderr
