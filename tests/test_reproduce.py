"""`sgjax reproduce --quick`: every experiment runs end to end and writes its table,
numbers and figures; the results page gathers them. (The default-setting figures are
in results/README.md; these quick runs only check that the machinery works and that
the numbers are sane.)"""

import json

import pytest

from sgjax._cli import main
from sgjax.reproduce import EXPERIMENTS, reproduce


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    page = reproduce(["all"], out, quick=True)
    return out, page


def test_every_experiment_writes_its_table_numbers_and_figures(quick):
    out, page = quick
    text = page.read_text()
    for name in EXPERIMENTS:
        md, js = out / f"{name}.md", out / f"{name}.json"
        assert md.exists() and js.exists()
        data = json.loads(js.read_text())
        assert data["quick"] is True and data["headline"] and data["seconds"] > 0
        figures = list(out.glob(f"{name}-*.png"))
        assert figures and all(f.stat().st_size > 1000 for f in figures)
        # Every figure the section links exists, and the page carries the section.
        for f in figures:
            assert f"({f.name})" in md.read_text()
        assert md.read_text().splitlines()[0] in text


def test_quick_numbers_are_sane(quick):
    out, _ = quick
    data = {name: json.loads((out / f"{name}.json").read_text()) for name in EXPERIMENTS}
    conv = data["convergence"]["results"]["growth-lognormal"]["budgets"]
    # More simulations, closer to the exact posterior mean.
    assert conv[-1]["mse_to_posterior_mean"] < conv[0]["mse_to_posterior_mean"]
    ms = data["model-selection"]["default"]
    assert 0 <= ms["error"]["SGNN"] < 0.75 and 0 <= ms["error"]["AIC"] < 0.75  # 4 models: chance is 0.75
    att = data["unobservable"]["results"]["sir-60-days"]["targets"]["attack_rate"]
    assert att["r2"] > 0.5 and 0.7 < att["coverage_90"] <= 1.0


def test_existing_results_are_not_overwritten(quick):
    out, _ = quick
    before = (out / "convergence.json").read_text()
    with pytest.raises(FileExistsError, match="overwrite"):
        reproduce(["convergence"], out, quick=True)
    assert (out / "convergence.json").read_text() == before


def test_cli_names_a_wrong_experiment(capsys):
    assert main(["reproduce", "convergance", "--quick"]) == 2
    assert "Did you mean 'convergence'" in capsys.readouterr().err
