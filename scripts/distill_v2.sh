#!/usr/bin/env bash
# Long, resumable distillation runs of a Fashion-MNIST teacher (docs/distillation.md, "Long runs").
# Usage: scripts/distill_v2.sh pd|ect   — run it again (same environment) to resume after a stop.
# Environment:
#   TEACHER      the teacher model file (default models/fmnist-unet-eps.pt)
#   RUN_ROOT     where the runs go (default runs/distill-v2; pd/ and ect/ below it)
#   FEWSTEP_BIN  a directory with the fewstep binary and libfewstep (default $RUN_ROOT/bin: copy them there
#                from a build, so that rebuilding the tree does not change a running job)
#   TORCH_LIB    LibTorch's library directory (default: the one of the python3 on PATH's torch)
# Runs at nice 19 on one thread; checkpoints every 250 steps; the CLI resumes bit-exactly (--resume).
set -euo pipefail
what=${1:?"usage: $0 pd|ect"}
root=${RUN_ROOT:-runs/distill-v2}
bin=${FEWSTEP_BIN:-$root/bin}
teacher=${TEACHER:-models/fmnist-unet-eps.pt}
torch_lib=${TORCH_LIB:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}
export LD_LIBRARY_PATH="$bin:$torch_lib"
resume=()
case "$what" in
  pd)
    out=$root/pd
    [[ -f $out/checkpoint.pt ]] && resume=(--resume)
    exec nice -n 19 "$bin/fewstep" --threads 1 distill progressive --teacher "$teacher" \
      --initial-steps 8 --final-steps 1 --iterations 4000 --batch 64 --lr 2e-4 --ema 0.999 --seed 0 \
      --name fmnist-v2-pd --out "$out" --checkpoint-every 250 --log-every 50 "${resume[@]}" ;;
  ect)
    out=$root/ect
    [[ -f $out/checkpoint.pt ]] && resume=(--resume)
    exec nice -n 19 "$bin/fewstep" --threads 1 distill consistency --method ect --teacher "$teacher" \
      --iterations 8000 --batch 32 --lr 1e-4 --ema 0.999 --seed 0 --ect-stages 8 \
      --name fmnist-v2-ect --out "$out" --checkpoint-every 250 --log-every 50 "${resume[@]}" ;;
  *) echo "$0: unknown run '$what' (pd or ect)" >&2; exit 2 ;;
esac
