"""The parts every notebook shares, in one place: the "Open in Colab" badge and the
setup cell (its first code cell). `execute.py` writes them into a notebook and
`tests/test_notebooks.py` checks that every notebook holds them as written here, with
the repository URL of `pyproject.toml`'s `[project.urls]`."""

import pathlib
import re
import tomllib


ROOT = pathlib.Path(__file__).resolve().parent.parent


def repository() -> str:
    """The repository URL in `pyproject.toml` (`[project.urls] Repository`)."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def badge(name: str, url: str | None = None) -> str:
    """The markdown "Open in Colab" badge for notebook file `name`."""
    path = re.sub(r"^https://github\.com/", "", url or repository())
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{path}/blob/main/notebooks/{name})"
    )


def setup_cell(url: str | None = None) -> str:
    """The first code cell: install sgjax where it is missing, and read quick mode."""
    return f'''# Setup. Installs sgjax when it is missing (as on Colab): from the project's repository, or from
# $SGJAX_PIP_TARGET when set (a local checkout, a wheel). sgjax pins no jax version, so pip keeps
# Colab's preinstalled jax, CUDA-enabled on a GPU runtime; do not install "jax[cpu]" over it.
# SGJAX_QUICK=1 shrinks every budget (CI runs each notebook that way); the figures below are full runs.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("sgjax") is None:
    target = os.environ.get("SGJAX_PIP_TARGET", "git+{url or repository()}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", target], check=True)
QUICK = os.environ.get("SGJAX_QUICK") == "1"'''
