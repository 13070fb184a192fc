"""The notebooks in notebooks/ run top to bottom on a fresh install, so none can rot.

Executing them is marked `notebooks` and left out of the default run: `pytest -m notebooks` (needs
`pip install ".[notebooks]"`). Each cell has a time limit (`REASONRAG_NOTEBOOK_CELL_TIMEOUT`, seconds,
default 600); a failure names the notebook, the cell and its first line, then the error. The checks
that the notebooks are committed without outputs and without machine paths run in the default suite.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = (
    "01_quickstart.ipynb",
    "02_process_rewards.ipynb",
    "03_inference_search.ipynb",
    "04_policy_training.ipynb",
)
CELL_TIMEOUT = int(os.environ.get("REASONRAG_NOTEBOOK_CELL_TIMEOUT", "600"))
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Absolute paths of a particular machine: a notebook must find its files relative to the repo or package.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:home|Users|work|tmp|root|mnt|opt|var)/[\w.-]+")


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_the_notebooks_are_there():
    names = {p.name for p in NOTEBOOKS}
    assert set(EXPECTED) <= names, f"missing from notebooks/: {sorted(set(EXPECTED) - names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path: Path):
    """No outputs or execution counts (they bloat diffs and go stale), no absolute machine paths."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), (
                f"{path.name} cell {index} has outputs: clear them before committing"
            )
            assert cell.get("execution_count") is None, f"{path.name} cell {index} has an execution count"
        found = MACHINE_PATH.search(_source(cell))
        assert found is None, f"{path.name} cell {index} names a machine path {found.group(0)!r}"


def _where(path: Path, nb, index: int) -> str:
    cell = nb.cells[index]
    code_number = sum(1 for c in nb.cells[: index + 1] if c.cell_type == "code")
    lines = [
        line for line in _source(cell).splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    first = lines[0].strip() if lines else ""
    return f"notebooks/{path.name}, cell {index} (code cell {code_number}): `{first[:100]}`"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path):
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    except ImportError as exc:
        pytest.fail(f"executing notebooks needs the notebooks extra: pip install '.[notebooks]' ({exc})")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},  # run in notebooks/, as Jupyter does
    )
    t0 = time.perf_counter()
    failure = None  # reported outside the except blocks, so pytest shows only our message
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as exc:
                trace = ANSI.sub("", str(exc)).strip().splitlines()
                failure = f"{_where(path, nb, index)} raised {exc.ename}: {exc.evalue}\n" + "\n".join(
                    trace[-40:]
                )
            except CellTimeoutError:
                failure = (
                    f"{_where(path, nb, index)} ran past {CELL_TIMEOUT}s (REASONRAG_NOTEBOOK_CELL_TIMEOUT)"
                )
            except DeadKernelError as exc:
                failure = f"{_where(path, nb, index)}: the kernel died ({exc})"
            if failure:
                break
    if failure:
        pytest.fail(failure, pytrace=False)
    print(f"{path.name}: {time.perf_counter() - t0:.1f}s")
