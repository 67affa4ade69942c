"""Run a notebook top to bottom through a Jupyter kernel and store its outputs.

    python notebooks/execute.py notebooks/01_quickstart.ipynb            # full settings, outputs saved
    python notebooks/execute.py notebooks/01_quickstart.ipynb --quick    # SGJAX_QUICK=1, nothing saved

First the badge (in the first markdown cell) and the setup cell (the first code cell)
are brought to `_setup.py`'s text. Prints the wall time and the file's size: write the
full-settings time in the notebook's first markdown cell.
"""

import argparse
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient


sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _setup import badge, setup_cell  # noqa: E402


def normalise(nb, name: str) -> None:
    """Put the badge first in the first markdown cell and the setup cell first among the code cells."""
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    lines = [line for line in first_md.source.splitlines() if "colab-badge.svg" not in line]
    first_md.source = "\n".join([badge(name), "", *lines]).replace("\n\n\n", "\n\n")
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and code[0].source.startswith("# Setup."):
        code[0].source = setup_cell()
    else:
        nb.cells.insert(nb.cells.index(first_md) + 1, nbformat.v4.new_code_cell(setup_cell()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=pathlib.Path)
    parser.add_argument("--quick", action="store_true", help="SGJAX_QUICK=1; outputs are not saved")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    normalise(nb, args.notebook.name)
    os.environ["SGJAX_QUICK"] = "1" if args.quick else "0"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    start = time.perf_counter()
    NotebookClient(nb, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
    elapsed = time.perf_counter() - start
    if not args.quick:
        nbformat.write(nb, args.notebook)
    size = args.notebook.stat().st_size / 1e6
    print(f"{args.notebook.name}: {elapsed:.0f} s ({'quick' if args.quick else 'full'}), file {size:.2f} MB")


if __name__ == "__main__":
    main()
