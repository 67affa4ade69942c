"""`sgjax reproduce --quick`: every experiment runs end to end and writes its table,
numbers and figures; the results page gathers them. (The default-setting figures are
in results/README.md; these quick runs only check that the machinery works and that
the numbers are sane.)

Every experiment but convergence is marked slow to keep CI near 10 minutes (run them
with `pytest -m slow`): convergence runs the whole machinery (training, tables,
figures, the page) in CI."""

import json

import pytest

from sgjax._cli._main import main
from sgjax.reproduce import CASE_STUDIES, EXPERIMENTS, reproduce, write_page


SLOW = {
    # convergence runs in the default suite through notebook 08 (quick mode), whose
    # checks read the files it writes and its error against the Bayes risk.
    "convergence",
    "unobservable",
    "model-selection",
    "recovery",
    "misspecification",
    "attribution",
    "boarding-school",
    "hare-lynx",
}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


def _sane(name, data):
    if name == "convergence":
        conv = data["results"]["growth-lognormal"]["budgets"]
        # More simulations, closer to the exact posterior mean.
        assert conv[-1]["mse_to_posterior_mean"] < conv[0]["mse_to_posterior_mean"]
    elif name == "unobservable":
        att = data["results"]["sir-60-days"]["targets"]["attack_rate"]
        assert att["r2"] > 0.5 and 0.7 < att["coverage_90"] <= 1.0
    elif name == "model-selection":
        err = data["settings"][data["default"]]["error"]
        assert 0 <= err["SGNN"] < 0.5 and 0 <= err["AIC"] < 0.5  # 2 models in quick mode: chance is 0.5
    elif name == "misspecification":
        rows = data["results"]["overdispersion"]["rows"]
        assert rows[-1]["flagged"] >= rows[0]["flagged"]
    elif name == "attribution":
        assert 0 <= data["mechanism"]["mean_abs_diff"] < 0.5
    elif name in CASE_STUDIES:
        for r in data["results"].values():
            assert 0.4 <= r["runs"][-1]["c2st"] <= 1.0 and 0 <= r["mismatch_p_value"] <= 1
    elif name == "recovery":
        r0 = next(iter(data["results"].values()))["methods"]["SGNN"]["R0"]
        assert r0["r2"] > 0 and 0.6 < r0["coverage_90"] <= 1.0


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in [*EXPERIMENTS, *CASE_STUDIES]]
)
def test_experiment_writes_its_table_numbers_and_figures(out, name):
    page = reproduce([name], out, quick=True)
    md, js = out / f"{name}.md", out / f"{name}.json"
    data = json.loads(js.read_text())
    assert data["quick"] is True and data["headline"] and data["seconds"] > 0
    figures = list(out.glob(f"{name}-*.png"))
    assert figures and all(f.stat().st_size > 1000 for f in figures)
    # Every figure is linked from the section, and the page carries the section.
    for f in figures:
        assert f"({f.name})" in md.read_text()
    assert md.read_text().splitlines()[0] in page.read_text()
    _sane(name, data)


def test_existing_results_are_not_overwritten(out):
    (out / "convergence.json").write_text('{"saved": true}')
    with pytest.raises(FileExistsError, match="overwrite"):
        reproduce(["convergence"], out, quick=True)
    assert (out / "convergence.json").read_text() == '{"saved": true}'
    (out / "convergence.json").unlink()


def test_page_lists_experiments_not_yet_run(tmp_path):
    text = write_page(tmp_path).read_text()
    assert text.count("not run") == len(EXPERIMENTS) + len(CASE_STUDIES)


def test_cli_names_a_wrong_experiment(capsys):
    assert main(["reproduce", "convergance", "--quick"]) == 2
    assert "Did you mean 'convergence'" in capsys.readouterr().err


def test_table_cells_escape_pipes():
    # A '|' in a header, cell or headline would split the markdown table's columns.
    from sgjax.reproduce._report import cell

    assert cell("P(SIR | x)") == r"P(SIR \| x)"
    assert cell(r"P(SIR \| x)") == r"P(SIR \| x)"  # already escaped: left alone
    assert cell("|bias|/sd") == r"\|bias\|/sd"


def test_lanes_keep_shared_experiments_together():
    from sgjax.reproduce import _lanes, _SHARED

    names = list(EXPERIMENTS)
    assert _lanes(names, 1) == [names]
    for jobs in (2, 3, 4):
        lanes = _lanes(names, jobs)
        assert len(lanes) <= jobs
        assert sorted(n for lane in lanes for n in lane) == sorted(names)  # each exactly once
        assert any(set(_SHARED) <= set(lane) for lane in lanes)
    assert _lanes(["convergence", "unobservable"], 2) == [["convergence"], ["unobservable"]]
    with pytest.raises(ValueError, match="jobs"):
        reproduce(["convergence"], "unused", quick=True, jobs=0)


@pytest.mark.slow
def test_parallel_lanes_give_the_same_results(tmp_path):
    # Two experiments in two processes: the same numbers as one after the other.
    def numbers(folder):
        out = {}
        for name in ("convergence", "unobservable"):
            data = json.loads((folder / f"{name}.json").read_text())
            out[name] = {k: v for k, v in data.items() if k not in ("seconds", "phases")}
        return out

    reproduce(["convergence", "unobservable"], tmp_path / "one", quick=True, jobs=1)
    reproduce(["convergence", "unobservable"], tmp_path / "two", quick=True, jobs=2)
    assert numbers(tmp_path / "one") == numbers(tmp_path / "two")
    assert (tmp_path / "two" / "README.md").exists()


@pytest.mark.parametrize("with_bayes", [True, False])
def test_model_selection_report_with_and_without_the_bayes_reference(tmp_path, monkeypatch, with_bayes):
    """The report's tables from fabricated comparisons (nothing compiles): the Bayes
    column, its confusion matrix and its ratio appear exactly when the reference ran
    (full runs), and every row has as many cells as its header (`--quick` has none)."""
    import numpy as np

    from sgjax.reproduce import _model_selection as ms

    def compare(cands, **cfg):
        err = {"SGNN": 0.1, "AIC": 0.2, "AICc": 0.21, "BIC": 0.25}
        out = dict(n_test=50, ratio_vs_aic=0.5, ratio_ci=(0.3, 0.8), ratio_vs_bic=0.4, mle_converged={},
                   confusion={m: np.eye(len(cands), dtype=int) for m in [*err, ms.BAYES]})  # fmt: skip
        if with_bayes:
            err[ms.BAYES] = 0.09
            out.update(
                bayes_vs_aic=0.45, bayes_vs_aic_ci=(0.2, 0.7), sgnn_agrees_with_bayes=0.9, bayes_expected_error=0.08
            )
        return dict(out, error=err)

    monkeypatch.setattr(ms, "compare", compare)
    monkeypatch.setattr(
        ms,
        "_settings",
        lambda quick: [("setting A", "growth", 30, None, {"n_starts": 2}), ("setting B", "growth", 20, 0.1, {})],
    )
    ms.run(tmp_path, quick=not with_bayes).write()
    text = (tmp_path / "model-selection.md").read_text()
    tables = [block for block in text.split("\n\n") if block.lstrip().startswith("|")]
    for table in tables:
        widths = {line.count("|") for line in table.splitlines()}
        assert len(widths) == 1, table  # header, rule and rows alike
    assert ("Bayes / AIC" in text) == with_bayes
    assert (f"Confusion matrix, {ms.BAYES}" in text) == with_bayes
    assert "0.45 (0.2–0.7)" in text if with_bayes else "Bayes" not in text
