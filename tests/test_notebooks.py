"""The research notebooks run top to bottom at small scale and are committed without outputs.

Each notebook reads ``SPECROUTER_NOTEBOOK_SMALL=1`` (set here) to shrink its workload and
writes its files under ``SPECROUTER_NOTEBOOK_OUT``.  A failing cell fails the test with the
cell's traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ("a_policy_comparison", "b_sim_vs_real", "c_new_policy")


def test_the_three_notebooks_exist() -> None:
    stems = [path.stem for path in NOTEBOOKS]
    for expected in EXPECTED:
        assert any(stem.endswith(expected) for stem in stems), f"notebooks/*{expected}.ipynb is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} cell {index} has outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECROUTER_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("SPECROUTER_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    )
    client.execute()
    produced = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.outputs]
    assert produced, f"{path.name} ran but printed nothing"
