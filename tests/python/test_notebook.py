"""examples/quickstart.ipynb runs top to bottom (nbclient) and shows its two figures."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
# The notebook's own default; FEWSTEP_QUICKSTART_MODEL (read by the notebook too) overrides it.
MODEL = Path(os.environ.get("FEWSTEP_QUICKSTART_MODEL", ROOT / "models" / "fmnist-unet-eps.pt"))


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_quickstart_notebook_executes(monkeypatch: pytest.MonkeyPatch) -> None:
    if not MODEL.is_file() or not MODEL.with_suffix(".json").is_file():
        pytest.skip(f"the Fashion-MNIST teacher {MODEL} (+ .json sidecar) is absent; train it with "
                    f"`fewstep train --data fmnist ...` (see models/) or set FEWSTEP_QUICKSTART_MODEL")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # One intra-op thread in the kernel (it inherits this environment): ~1.5x slower than two on an
    # idle 2-core machine, but a 2-thread OpenMP region on a busy one (a build or a training run
    # beside the tests) waits for its descheduled thread at every op and runs ~30x slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # kernel "python3" is ipykernel's kernel in this interpreter: jupyter_client launches the kernel
    # spec's bare "python" as sys.executable, i.e. the .venv that runs the tests.
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError with the cell's traceback on any error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 2, "expected the sample grid and the error-vs-NFE plot"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "dpmpp_2m, 10 steps: NFE = 10" in text
    table = text[text.index("NFE  "):].splitlines()
    assert all(s in table[0] for s in ("ddim", "dpmpp_2m", "unipc", "deis"))
    rows = [line.split() for line in table[1:] if line.strip()]
    assert [int(r[0]) for r in rows] == [5, 6, 8, 10, 12, 15, 20]
    # Every solver gets closer to the reference with more evaluations (5 -> 20 NFE).
    for j in range(1, 5):
        assert float(rows[-1][j]) < float(rows[0][j])
