"""examples/quickstart.ipynb is stored executed (GitHub shows its figures), and re-executed here
(nbclient) it runs top to bottom and produces the same structure: the same cells, and per code cell
the same kinds of output (printed text, figures) as the stored copy."""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
# The notebook's own default; FEWSTEP_QUICKSTART_MODEL (read by the notebook too) overrides it.
MODEL = Path(os.environ.get("FEWSTEP_QUICKSTART_MODEL", ROOT / "models" / "fmnist-unet-eps.pt"))
FIGURES = 3  # the sample grid, the error-vs-NFE plot, the distillation figure


def structure(nb: nbformat.NotebookNode) -> list:
    """Per cell: its type and, for code cells, (printed text on stdout?, number of PNG figures, errors)."""
    out = []
    for c in nb.cells:
        if c.cell_type != "code":
            out.append((c.cell_type,))
            continue
        stdout = any(o.output_type == "stream" and o.name == "stdout" for o in c.outputs)
        images = sum(o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})
                     for o in c.outputs)
        errors = sum(o.output_type == "error" for o in c.outputs)
        out.append(("code", stdout, images, errors))
    return out


def text_of(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def test_notebook_is_stored_executed() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "store the notebook executed"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "executed top to bottom once"
    cells = structure(nb)
    assert sum(c[2] for c in cells if c[0] == "code") == FIGURES and not any(c[3] for c in cells if c[0] == "code")
    # No machine-specific paths in what GitHub shows.
    assert not re.search(r"/(work|home|root|tmp)/", text_of(nb)), text_of(nb)


def test_quickstart_notebook_executes(monkeypatch: pytest.MonkeyPatch) -> None:
    if not MODEL.is_file() or not MODEL.with_suffix(".json").is_file():
        pytest.skip(f"the Fashion-MNIST teacher {MODEL} (+ .json sidecar) is absent; train it with "
                    f"`fewstep train --data fmnist ...` (see models/) or set FEWSTEP_QUICKSTART_MODEL")
    stored = nbformat.read(NOTEBOOK, as_version=4)
    nb = copy.deepcopy(stored)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    # One intra-op thread in the kernel (it inherits this environment): ~1.5x slower than two on an
    # idle 2-core machine, but a 2-thread OpenMP region on a busy one (a build or a training run
    # beside the tests) waits for its descheduled thread at every op and runs ~30x slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # kernel "python3" is ipykernel's kernel in this interpreter: jupyter_client launches the kernel
    # spec's bare "python" as sys.executable, i.e. the .venv that runs the tests.
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError with the cell's traceback on any error

    assert structure(nb) == structure(stored)
    text = text_of(nb)
    assert "dpmpp_2m, 10 steps: NFE = 10" in text
    table = text[text.index("NFE  "):].splitlines()
    assert all(s in table[0] for s in ("ddim", "dpmpp_2m", "unipc", "deis"))
    rows = []
    for line in table[1:]:  # the rows: an NFE and four errors
        if not re.fullmatch(r"\s*\d+(\s+\d\.\d\de[-+]\d\d){4}\s*", line):
            break
        rows.append(line.split())
    assert [int(r[0]) for r in rows] == [5, 6, 8, 10, 12, 15, 20]
    # Every solver gets closer to the reference with more evaluations (5 -> 20 NFE).
    for j in range(1, 5):
        assert float(rows[-1][j]) < float(rows[0][j])
    # The distillation cell trained, and every 4-step sampler landed near the teacher's 8-step DDIM
    # (pixels span [-1, 1]: a broken student, e.g. the teacher's weights read as another prediction,
    # is at distance ~1).
    m = re.search(r"(\d+) iterations in .* loss (\S+) -> (\S+) \(mean of the last 5\)", text)
    assert m and int(m.group(1)) > 0 and math.isfinite(float(m.group(2))) and math.isfinite(float(m.group(3)))
    distances = [float(d) for d in re.findall(r"median RMS distance to the teacher's 8-step DDIM (\S+)", text)]
    assert len(distances) == 4 and distances[0] == 0.0 and all(d < 0.5 for d in distances[1:]), distances
