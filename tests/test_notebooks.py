"""Every notebook in notebooks/ runs top to bottom through a real Jupyter kernel, in
quick mode (`SGJAX_QUICK=1`, read by the notebook's setup cell), and holds what a
reader sees without running it: the Colab badge and setup cell with the repository URL
of `pyproject.toml`, stored outputs with figures, its full-settings time, and a size
GitHub renders.

After a notebook's own cells, the test runs `tests/notebook_checks/<notebook>.py` in the
same kernel: assertions on what the notebook computed, which fail if it computes the
wrong thing rather than merely nothing.
"""

import json
import pathlib
import re
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHECKS = pathlib.Path(__file__).parent / "notebook_checks"
sys.path.insert(0, str(NOTEBOOKS))
from _setup import badge, repository, setup_cell  # noqa: E402


ALL = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))

#: Each notebook file stays small enough for GitHub and the docs to show it.
MAX_BYTES = 1_500_000


def _cells(name: str) -> list[dict]:
    return json.loads((NOTEBOOKS / name).read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def test_every_notebook_has_checks():
    assert ALL, "no notebooks found"
    assert sorted(p.stem for p in CHECKS.glob("*.py")) == sorted(pathlib.Path(n).stem for n in ALL)


@pytest.mark.parametrize("name", ALL)
def test_badge_setup_cell_and_stored_outputs(name):
    cells = _cells(name)
    first_md = next(c for c in cells if c["cell_type"] == "markdown")
    assert badge(name) in _source(first_md), f"{name}: the first markdown cell needs the Colab badge"
    assert re.search(r"Full settings: about [\d.]+ (s|min) on 2 CPU cores", _source(first_md)), (
        f"{name}: write the measured full-settings time in the first markdown cell"
    )
    code = [c for c in cells if c["cell_type"] == "code"]
    assert _source(code[0]) == setup_cell(), f"{name}: the first code cell must be notebooks/_setup.py's setup cell"
    assert all(c.get("execution_count") for c in code), f"{name}: store the outputs of a full run (execute.py)"
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{name}: no stored figure"
    assert (NOTEBOOKS / name).stat().st_size <= MAX_BYTES


def test_setup_cell_installs_from_the_repository_url():
    url = repository()
    assert url.startswith("https://github.com/")
    assert f'"git+{url}"' in setup_cell()
    assert "SGJAX_PIP_TARGET" in setup_cell() and "SGJAX_QUICK" in setup_cell()
    readme = (ROOT / "README.md").read_text()
    for name in ALL:
        assert badge(name) in readme, f"README lacks the Colab badge of {name}"


def _execute(name: str, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("SGJAX_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("SGJAX_PIP_TARGET", raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell((CHECKS / f"{pathlib.Path(name).stem}.py").read_text()))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()


@pytest.mark.parametrize("name", ALL)
def test_notebook_runs_in_quick_mode(name, monkeypatch):
    _execute(name, monkeypatch)
