#!/usr/bin/env bash
# Long, resumable distillation runs of a Fashion-MNIST teacher (docs/results.md, "Students of the current teacher").
# Usage: scripts/distill_v2.sh pd|pd-weights|pd-long|ect|ect-long|ect-xl|pd-refine|pd4-direct|pd4-k4|pd4-k4b|dmd   — run it again (same environment) to resume.
#   pd          progressive 8 -> 1 from the teacher in function space (4000 iterations per round; the
#               shipped fmnist-v2-pd 8- and 4-step students; each exported student records the solver
#               measured closest to the teacher, dpmpp_2m and deis for those two: --student-solver auto)
#   pd-weights  the same from the teacher's weights (docs/distillation.md, "Where a student starts"; the
#               shipped fmnist-v2-pd 2- and 1-step students)
#   pd-long     pd-weights with 8000 iterations per round (32000 in all, about 4-5 h on one core over
#               several sessions; its students are fmnist-v3-pd)
#   ect         easy consistency tuning from the teacher's weights, 20000 iterations, the 2-step sampler
#               re-noising at sigma/alpha = 2
#   ect-long    the same with 40000 iterations (2-3 h on one core; the fmnist-v2-ect students shipped
#               until 2026-12-05)
#   ect-xl      the same with 80000 iterations, the Δt schedule stretched over them (3 h 34 min at
#               6.2 it/s on one core beside other work, up to 6 h on a busier one); its final students
#               are the shipped fmnist-v2-ect ones (docs/results.md)
#   pd-refine   the 8-step student of `pd` refined against 64 teacher DDIM steps (--first-round-substeps 8),
#               then a 4-step round from it (docs/distillation.md, "A better first target")
#   pd4-direct  the 4-step student of `pd` refined against 64 teacher DDIM steps (--first-round-substeps 16)
#   pd4-k4      the 4-step student of `pd` refined against 16 teacher DDIM steps (--first-round-substeps 4;
#               34 min on one core; shipped as fmnist-v2-pd-4step on 2026-12-05, sampled with deis)
#   pd4-k4b     pd4-k4's student refined the same way for 5000 more iterations (seed 1; 1 h 04 min on one
#               core; the shipped fmnist-v2-pd-4step since 2026-12-05, sampled with deis; run pd4-k4 first)
#   dmd         ect-xl's final network tuned by distribution matching of its 1-step map (Python:
#               scripts/ect_finetune.py --method dmd, two threads, about 8 min; the shipped fmnist-v2-dmd
#               students since 2026-12-05; run ect-xl first)
# Environment:
#   TEACHER      the teacher model file (default models/fmnist-unet-eps.pt)
#   RUN_ROOT     where the runs go (default runs/distill-v2; pd/ and ect/ below it)
#   FEWSTEP_BIN  a directory with the fewstep binary and libfewstep (default $RUN_ROOT/bin: copy them there
#                from a build, so that rebuilding the tree does not change a running job)
#   TORCH_LIB    LibTorch's library directory (default: the one of the python3 on PATH's torch)
# Runs at nice 19 on one thread; checkpoints every 250 steps; the CLI resumes bit-exactly (--resume).
set -euo pipefail
what=${1:?"usage: $0 pd|pd-weights|pd-long|ect|ect-long|ect-xl|pd-refine|pd4-direct|pd4-k4|pd4-k4b|dmd"}
root=${RUN_ROOT:-runs/distill-v2}
bin=${FEWSTEP_BIN:-$root/bin}
teacher=${TEACHER:-models/fmnist-unet-eps.pt}
torch_lib=${TORCH_LIB:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}
export LD_LIBRARY_PATH="$bin:$torch_lib"

# run NAME METHOD ARGS...: `fewstep distill METHOD` into $root/NAME, resumed when it has a checkpoint.
run() {
  local out=$root/$1 method=$2
  shift 2
  local resume=()
  [[ -f $out/checkpoint.pt ]] && resume=(--resume)
  exec nice -n 19 "$bin/fewstep" --threads 1 distill "$method" --teacher "$teacher" "$@" \
    --out "$out" --checkpoint-every 250 --log-every 50 "${resume[@]}"
}

# ect NAME ITERATIONS: easy consistency tuning from the teacher's weights, 8 stages, re-noising at 2.
ect() {
  run "$1" consistency --method ect --init weights --iterations "$2" --batch 32 --lr 1e-4 --ema 0.999 \
    --seed 0 --ect-stages 8 --intermediate-sigma 2 --name fmnist-v2-ect
}

# pd_weights NAME ITERATIONS STUDENT: progressive 8 -> 1 from the teacher's weights, ITERATIONS per round.
pd_weights() {
  run "$1" progressive --init weights --initial-steps 8 --final-steps 1 --iterations "$2" --batch 64 --lr 2e-4 \
    --ema 0.999 --seed 0 --name "$3"
}

case "$what" in
  pd) run pd progressive --init teacher --initial-steps 8 --final-steps 1 --iterations 4000 --batch 64 --lr 2e-4 \
        --ema 0.999 --seed 0 --name fmnist-v2-pd ;;
  pd-weights) pd_weights pd-weights 4000 fmnist-v2-pd ;;
  pd-long) pd_weights pd-long 8000 fmnist-v3-pd ;;
  ect) ect ect 20000 ;;
  ect-long) ect ect-long 40000 ;;
  ect-xl) ect ect-xl 80000 ;;
  pd-refine) run pd-refine progressive --student-init "$root/pd/fmnist-v2-pd-8step.pt" --initial-steps 8 \
        --final-steps 4 --first-round-substeps 8 --iterations 2500 --batch 64 --lr 1e-4 --ema 0.999 --seed 1 \
        --name fmnist-v3-pd-refine ;;
  pd4-direct) run pd4-direct progressive --student-init "$root/pd/fmnist-v2-pd-4step.pt" --initial-steps 4 \
        --final-steps 4 --first-round-substeps 16 --iterations 2500 --batch 64 --lr 1e-4 --ema 0.999 --seed 1 \
        --name fmnist-v3-pd-direct ;;
  pd4-k4) run pd4-k4 progressive --student-init "$root/pd/fmnist-v2-pd-4step.pt" --initial-steps 4 --final-steps 4 \
        --first-round-substeps 4 --iterations 2500 --batch 64 --lr 1e-4 --ema 0.999 --seed 0 --name fmnist-v2-pd-k4 ;;
  pd4-k4b) run pd4-k4b progressive --student-init "$root/pd4-k4/fmnist-v2-pd-k4-4step.pt" --initial-steps 4 --final-steps 4 \
        --first-round-substeps 4 --iterations 5000 --batch 64 --lr 1e-4 --ema 0.999 --seed 1 --name fmnist-v2-pd-k4b ;;
  dmd) nice -n 19 python3 scripts/ect_finetune.py --method dmd --run "$root/ect-xl" --teacher "$teacher" \
        --out "$root/dmd" --name fmnist-v2-dmd --iterations 1500 --lr 5e-6 --ema 0.999 --checkpoint-every 500 \
        --threads 2 ;;
  *) echo "$0: unknown run '$what' (pd, pd-weights, pd-long, ect, ect-long, ect-xl, pd-refine, pd4-direct, pd4-k4, pd4-k4b or dmd)" >&2; exit 2 ;;
esac
