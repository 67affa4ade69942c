"""The README's Python example and the end-to-end program of docs/end-to-end.md run
against the current API, with their budgets cut (each cut must still match the page's
text, so an edited example fails here instead of silently running long). Slow: two
trainings, a NUTS run and a C2ST, a minute or two of compiling on 2 cores."""

import pathlib
import re

import numpy as np
import pytest


ROOT = pathlib.Path(__file__).parent.parent
README = ROOT / "README.md"
END_TO_END = ROOT / "docs" / "end-to-end.md"

#: (text in a page's code, what it becomes here): the same calls on a smaller budget.
SHRINK = (
    ("steps=2000)", "steps=100)"),
    ("steps=3000)", "steps=100)"),
    (
        "prior=prior, key=jax.random.key(3))",
        "prior=prior, key=jax.random.key(3), num_warmup=50, num_samples=100, num_chains=1)",
    ),
)


def _blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


@pytest.mark.slow
def test_readme_examples_run(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # the examples write runs/ and outbreak.csv
    blocks = _blocks(README) + _blocks(END_TO_END)
    for old, new in SHRINK:
        assert any(old in b for b in blocks), f"README.md / docs/end-to-end.md no longer contain {old!r}: update SHRINK"
        blocks = [b.replace(old, new) for b in blocks]
    spaces = []
    for i, src in enumerate(blocks):
        ns: dict = {}
        exec(compile(src, f"python block {i + 1} (README.md, then docs/end-to-end.md)", "exec"), ns)
        spaces.append(ns)
    quick, own = spaces[0], spaces[1]
    assert set(quick["lower"]) == {"beta", "gamma", "R0", "final_size"}
    assert all(quick["lower"][k].shape == (5,) for k in quick["lower"])
    assert (tmp_path / "runs" / "my-sgnn").exists()
    # The end-to-end program: intervals by name, a predictive check from the posterior's
    # own draws, and a C2ST accuracy between the flow and NUTS (0.5 to 1 by definition).
    assert set(own["lower"]) == {"beta", "gamma", "phi"}
    theta = own["draws"].theta  # the model's derived R0 for every posterior draw
    np.testing.assert_allclose(own["r0"], theta["beta"] / theta["gamma"], rtol=1e-5)
    assert 0.0 <= own["ppc"].inside <= 1.0
    assert 0.4 <= own["accuracy"] <= 1.0


def test_readme_examples_are_found():
    assert len(_blocks(README)) == 1, "update test_readme_examples_run for the README's python blocks"
    assert len(_blocks(END_TO_END)) == 1, "update test_readme_examples_run for docs/end-to-end.md's python blocks"
