"""``python -m fewstep.adapters PIPELINE OUT.pt``: a diffusers pipeline folder as a fewstep model file.

Loads the folder with :func:`fewstep.adapters.load_diffusers` (``model_index.json``: its unet or
transformer and its scheduler) and writes it with :func:`fewstep.export`, so ``fewstep sample``,
``fewstep eval`` and ``fewstep-bench solvers --model`` run it without Python (docs/interop.md).
Export is Python's side of the model because the network is Python code (diffusers); the C++
binaries read what it writes.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewstep.adapters", description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", help="a diffusers pipeline folder (with model_index.json)")
    parser.add_argument("out", help="the model file to write (.pt; the sidecar .json goes beside it)")
    parser.add_argument("--shape", help="one sample without the batch, e.g. 3,32,32 (default: the model's config)")
    args = parser.parse_args(argv)
    import fewstep as fs  # noqa: PLC0415 - after argument parsing: --help does not import torch

    shape = [int(d) for d in args.shape.split(",")] if args.shape else None
    try:
        adapter = fs.adapters.load_diffusers(args.pipeline)
        sidecar = fs.export(adapter, args.out, sample_shape=shape)
    except (ValueError, TypeError, OSError) as e:
        print(f"python -m fewstep.adapters: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {sidecar['export']['source']}, {sidecar['prediction']} prediction, "
          f"sample shape {sidecar['sample_shape']}, {sidecar['parameters']} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
