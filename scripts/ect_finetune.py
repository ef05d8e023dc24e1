#!/usr/bin/env python3
"""One more stage of easy consistency tuning (arXiv 2406.14548) for a finished ECT run, from Python.

Starts from the EMA network of a `fewstep distill consistency --method ect` run's checkpoint (by default
the `ect-xl` run of scripts/distill_v2.sh, whose last stage pairs levels a gap n(t)/256 apart), and goes on
training it with `fs.ConsistencyLoss("ect")` at the next gap, n(t)/512 (`--q`), at a constant small learning
rate (docs/results.md, "One more ECT stage", measures it: within the checkpoints' spread of the start);
`--method cd` tunes it by consistency distillation from the teacher's Heun steps instead. The
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
    p.add_argument("--lr", type=float, default=2e-5, help="constant learning rate")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--method", choices=("ect", "cd"), default="ect",
                   help="ect, or cd: consistency distillation from the teacher's ODE steps instead of ECT's pairs "
                        "(docs/results.md measures it from this start: worse)")
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
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)

    schedule = fs.load_model_file(a.teacher)["schedule"]
    net = torch.jit.load(a.teacher)  # the architecture; the weights are the ECT run's EMA
    base = fs.Checkpoint.load(os.path.join(a.run, "checkpoint.pt"))
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(base.tensor("ema/" + name))
            param.requires_grad_(True)
    if a.method == "cd":
        loss = fs.ConsistencyLoss(schedule, "cd", fs.load_model_file(a.teacher)["denoiser"],
                                  teacher_solver=a.teacher_solver, num_points=a.num_points, target_ema=a.target_ema,
                                  distance="pseudo_huber")
    else:
        loss = fs.ConsistencyLoss(schedule, "ect", ect_stages=1, ect_q=a.q, ect_total_steps=a.iterations,
                                  p_mean=a.p_mean, p_std=a.p_std)
    trainer = fs.train.loss_trainer(loss, net, fs.load_fashion_mnist()["images"], batch_size=a.batch, lr=a.lr,
                                    ema=a.ema, total_steps=0, seed=a.seed)
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
        print(f"step {trainer.step_count}/{a.iterations}  loss {sum(recent) / len(recent):.3f}  "
              f"{(trainer.step_count - done_before) / (time.time() - start):.2f} it/s", flush=True)

    student = trainer.export()
    settings = {"base_run": os.path.basename(os.path.normpath(a.run)), "consistency_method": a.method,
                "iterations": a.iterations, "batch": a.batch, "lr": a.lr, "ema": a.ema, "seed": a.seed,
                "distance": loss.options()["distance"], "start_sigma": fs.CONSISTENCY_START_SIGMA,
                "script": "scripts/ect_finetune.py",
                **({"num_points": a.num_points, "target_ema": a.target_ema, "teacher_solver": a.teacher_solver}
                   if a.method == "cd" else {"ect_q": a.q, "p_mean": a.p_mean, "p_std": a.p_std})}
    for steps, mid in ((1, []), (2, [a.intermediate_sigma])):
        path = os.path.join(a.out, f"{a.name}-{steps}step.pt")
        fs.export_student(student, path, teacher=a.teacher, prediction="x0", solver="consistency",
                          timesteps=fs.consistency_timesteps(schedule, fs.CONSISTENCY_START_SIGMA, mid),
                          method="consistency",
                          settings=dict(settings, steps=steps, **({"intermediate_sigma": mid[0]} if mid else {})),
                          consistency={"sigma_data": loss.options()["sigma_data"], "t_min": schedule.t_min})
        print("wrote", path, json.dumps(fs.read_model_file_info(path)["timesteps"].tolist()), flush=True)


if __name__ == "__main__":
    main()
