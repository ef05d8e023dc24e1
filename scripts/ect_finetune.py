#!/usr/bin/env python3
"""One more stage of easy consistency tuning (arXiv 2406.14548) for a finished ECT run, from Python.

Starts from the EMA network of a `fewstep distill consistency --method ect` run's checkpoint (by default
the `ect-xl` run of scripts/distill_v2.sh, whose last stage pairs levels a gap n(t)/256 apart), and goes on
training it with `fs.ConsistencyLoss("ect")` at the next gap, n(t)/512 (`--q`), at a constant small learning
rate (docs/results.md, "One more ECT stage", measures it: within the checkpoints' spread of the start);
`--method cd` tunes it by consistency distillation from the teacher's Heun steps instead, and `--method dmd`
by distribution matching of its 1-step map against the teacher (`fs.DistributionMatchingLoss`, arXiv
2311.18828; docs/distillation.md, "Distribution matching"). The
loop is the library's (`fs.train.loss_trainer`): checkpointed every `--checkpoint-every` iterations, and the
same command run again resumes bit-exactly. At the end it writes the 1- and 2-step students as model files
(`fs.export_student` with the consistency block, grids from sigma/alpha = 80, the 2-step one re-noising
at `--intermediate-sigma`).

  python3 scripts/ect_finetune.py --run runs/distill-v2/ect-xl --out runs/ect-ft --iterations 10000

Measure the students with `fewstep-bench distill --cm 'runs/ect-ft/fmnist-{M}-ft-{N}step.pt' ...`
(docs/results.md).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

import fewstep as fs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/distill-v2/ect-xl", help="the finished ECT run directory (its checkpoint.pt)")
    p.add_argument("--teacher", default="models/fmnist-unet-eps.pt", help="the teacher model file of that run")
    p.add_argument("--out", default="runs/ect-ft", help="this run's directory (checkpoint, students)")
    p.add_argument("--name", default="fmnist-ect-ft", help="the students' file name stem")
    p.add_argument("--iterations", type=int, default=10000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="constant learning rate (default 2e-5; dmd 1e-5)")
    p.add_argument("--ema", type=float, default=None, help="the student's EMA decay (default 0.999; dmd 0.99)")
    p.add_argument("--grad-clip", type=float, default=None, help="gradient-norm clip, 0 = off (default 1; dmd 0)")
    p.add_argument("--method", choices=("ect", "cd", "dmd"), default="ect",
                   help="ect; cd: consistency distillation from the teacher's ODE steps instead of ECT's pairs "
                        "(docs/results.md measures it from this start: worse); dmd: distribution matching of the "
                        "1-step map")
    p.add_argument("--fake-lr", type=float, default=1e-4, help="dmd: the fake denoiser's learning rate")
    p.add_argument("--fake-updates", type=int, default=2, help="dmd: fake denoiser updates per step")
    p.add_argument("--warmup", type=int, default=300, help="dmd: steps in which only the fake denoiser learns")
    p.add_argument("--snapshots", action="store_true",
                   help="also save the EMA network at every checkpoint as ema-STEP.pt (to pick a step afterwards)")
    p.add_argument("--num-points", type=int, default=18, help="cd: the Karras levels N")
    p.add_argument("--target-ema", type=float, default=0.95, help="cd: the target network's EMA rate")
    p.add_argument("--teacher-solver", default="heun", help="cd: the teacher's deterministic step")
    p.add_argument("--q", type=float, default=512.0, help="the pair gap is n(t)/q (one stage: the run's 8th was 256)")
    p.add_argument("--p-mean", type=float, default=-1.1, help="mean of the lognormal of sigma/alpha (ECT's)")
    p.add_argument("--p-std", type=float, default=2.0)
    p.add_argument("--intermediate-sigma", type=float, default=2.0, help="the 2-step student's re-noising level")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--checkpoint-every", type=int, default=2500)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    dmd = a.method == "dmd"
    a.lr = a.lr if a.lr is not None else (1e-5 if dmd else 2e-5)
    a.ema = a.ema if a.ema is not None else (0.99 if dmd else 0.999)
    a.grad_clip = a.grad_clip if a.grad_clip is not None else (0.0 if dmd else 1.0)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)

    teacher = fs.load_model_file(a.teacher)
    schedule = teacher["schedule"]
    net = torch.jit.load(a.teacher)  # the architecture; the weights are the ECT run's EMA
    base = fs.Checkpoint.load(os.path.join(a.run, "checkpoint.pt"))
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(base.tensor("ema/" + name))
            param.requires_grad_(True)
    if dmd:
        loss = fs.DistributionMatchingLoss(schedule, torch.jit.load(a.teacher),
                                           teacher_prediction=teacher["prediction"], student="consistency", fake_lr=a.fake_lr, fake_updates=a.fake_updates,
                                           warmup=a.warmup)
    elif a.method == "cd":
        loss = fs.ConsistencyLoss(schedule, "cd", teacher["denoiser"],
                                  teacher_solver=a.teacher_solver, num_points=a.num_points, target_ema=a.target_ema,
                                  distance="pseudo_huber")
    else:
        loss = fs.ConsistencyLoss(schedule, "ect", ect_stages=1, ect_q=a.q, ect_total_steps=a.iterations,
                                  p_mean=a.p_mean, p_std=a.p_std)
    trainer = fs.train.loss_trainer(loss, net, fs.load_fashion_mnist()["images"], batch_size=a.batch, lr=a.lr,
                                    ema=a.ema, grad_clip=a.grad_clip, total_steps=0, seed=a.seed)
    checkpoint = os.path.join(a.out, "checkpoint.pt")
    if os.path.exists(checkpoint):
        trainer.load_checkpoint(checkpoint)
        print(f"resumed {checkpoint} at step {trainer.step_count}", flush=True)
    start = time.time()
    done_before = trainer.step_count
    while trainer.step_count < a.iterations:
        steps = min(a.checkpoint_every, a.iterations - trainer.step_count)
        trainer.train(steps, checkpoint=checkpoint, progress=False)
        recent = trainer.impl.losses[-min(500, len(trainer.impl.losses)):]
        fake = f"  fake DSM loss {loss.fake_loss:.4f}" if dmd else ""
        print(f"step {trainer.step_count}/{a.iterations}  loss {sum(recent) / len(recent):.3f}{fake}  "
              f"{(trainer.step_count - done_before) / (time.time() - start):.2f} it/s", flush=True)
        if a.snapshots:
            trainer.export().save(os.path.join(a.out, f"ema-{trainer.step_count}.pt"))

    student = trainer.export()
    by_method = {"cd": {"num_points": a.num_points, "target_ema": a.target_ema, "teacher_solver": a.teacher_solver,
                        "distance": loss.options().get("distance")},
                 "ect": {"ect_q": a.q, "p_mean": a.p_mean, "p_std": a.p_std,
                         "distance": loss.options().get("distance")},
                 "dmd": {"fake_lr": a.fake_lr, "fake_updates": a.fake_updates, "warmup": a.warmup,
                         "matching_t_min": loss.options().get("t_min"),
                         "matching_t_max": loss.options().get("t_max")}}
    settings = {"base_run": os.path.basename(os.path.normpath(a.run)), "consistency_method": a.method,
                "iterations": a.iterations, "batch": a.batch, "lr": a.lr, "ema": a.ema, "grad_clip": a.grad_clip,
                "seed": a.seed, "start_sigma": fs.CONSISTENCY_START_SIGMA, "script": "scripts/ect_finetune.py",
                **by_method[a.method]}
    sigma_data = (loss.options()["consistency"] if dmd else loss.options())["sigma_data"]
    for steps, mid in ((1, []), (2, [a.intermediate_sigma])):
        path = os.path.join(a.out, f"{a.name}-{steps}step.pt")
        fs.export_student(student, path, teacher=a.teacher, prediction="x0", solver="consistency",
                          timesteps=fs.consistency_timesteps(schedule, fs.CONSISTENCY_START_SIGMA, mid),
                          method="distribution_matching" if dmd else "consistency",
                          settings=dict(settings, steps=steps, **({"intermediate_sigma": mid[0]} if mid else {})),
                          consistency={"sigma_data": sigma_data, "t_min": schedule.t_min})
        print("wrote", path, json.dumps(fs.read_model_file_info(path)["timesteps"].tolist()), flush=True)


if __name__ == "__main__":
    main()
