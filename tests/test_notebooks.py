"""The notebooks in notebooks/ run top to bottom against the current API.

Each notebook's code cells run in order in one namespace, as Jupyter would, with the
training budget cut (listed in `SHRINK`, and each cut must still match the notebook's
text, so that a changed notebook fails here instead of silently running long). Plots go
to matplotlib's Agg backend. The final namespace is checked for what the notebook shows.
"""

import json
import pathlib

import matplotlib
import numpy as np


NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"

#: (text in a code cell, what it becomes here): the same calls on a smaller budget.
SHRINK = {
    "01_simulate.ipynb": (),
    "02_train_sgnn.ipynb": (("steps=3000", "steps=100"),),
}


def _run(name: str) -> dict:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [
        "".join(c["source"]) for c in json.loads((NOTEBOOKS / name).read_text())["cells"] if c["cell_type"] == "code"
    ]
    for old, new in SHRINK[name]:
        assert any(old in src for src in cells), (
            f"{name} no longer contains {old!r}: update SHRINK in tests/test_notebooks.py"
        )
        cells = [src.replace(old, new) for src in cells]
    namespace: dict = {}
    try:
        for i, src in enumerate(cells):
            exec(compile(src, f"{name}, code cell {i + 1}", "exec"), namespace)
    finally:
        plt.close("all")
    return namespace


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SHRINK)


def test_simulate_notebook():
    ns = _run("01_simulate.ipynb")
    sims = ns["sims"]
    assert sims.observations.shape == (10_000, 100, 1)
    assert np.all(sims.valid)  # failed draws were resampled
    assert np.all(sims.observations[sims.valid] >= 0)
    assert set(ns["derived"]) >= {"R0"}
    np.testing.assert_allclose(ns["derived"]["R0"], sims.theta["beta"] / sims.theta["gamma"], rtol=1e-6)


def test_train_notebook():
    ns = _run("02_train_sgnn.ipynb")
    assert ns["history"]["step"][-1] == 100
    final_size, r0 = np.asarray(ns["final_size"]), np.asarray(ns["R0"])
    assert final_size.shape == r0.shape == (2000,)
    # Final sizes are a fraction of the 763 boys, larger for larger R0 (the closed form).
    assert np.all((final_size > 0) & (final_size <= 763))
    order = np.argsort(r0)
    assert np.all(np.diff(final_size[order]) >= -1e-3)
    assert ns["q"].shape == (5, len(ns["data"].times))
