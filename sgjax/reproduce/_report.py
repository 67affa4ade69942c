"""What an experiment produces: a markdown section with tables and figures, and a
JSON file with every number behind them."""

import contextlib
import dataclasses
import json
import math
import pathlib
import platform
import re
import time

import numpy as np

from .._io import atomic_write, versions
from .._plots import _pyplot, save_figure


def _plain(value):
    """JSON-able: NumPy scalars and arrays to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        arr = np.asarray(value)
        return _plain(arr.tolist()) if arr.ndim else _plain(arr.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return _plain(value.item())
    return value


def cell(text: str) -> str:
    """Text for a markdown table cell: an unescaped `|` would end the cell."""
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def fmt(value, digits: int = 3) -> str:
    """A number for a table: `digits` significant figures, `–` for missing."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    value = float(value)
    if not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) >= 10**5 or abs(value) < 10**-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


@dataclasses.dataclass
class Report:
    """The output of one experiment, written as `NAME.md`, `NAME.json` and
    `NAME-*.png` in an output folder.

    **Arguments:**

    - `name`: the experiment's command name, e.g. `"convergence"`.
    - `title`: a heading.
    - `claim`: the claim of the paper that the experiment checks.
    - `out`: the output folder (figures are written there as they are made).
    - `quick`: whether this is the reduced CI version.
    """

    name: str
    title: str
    claim: str
    out: pathlib.Path
    quick: bool
    blocks: list = dataclasses.field(default_factory=list)
    data: dict = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @contextlib.contextmanager
    def phase(self, name: str):
        """Time a part of the experiment (compilation included); the seconds are added
        to `data["phases"][name]` and listed on the page, so that a slow experiment
        shows where its time goes."""
        t = time.perf_counter()
        try:
            yield
        finally:
            phases = self.data.setdefault("phases", {})
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t

    def text(self, markdown: str) -> None:
        self.blocks.append(markdown.strip())

    def table(self, headers, rows, caption: str | None = None) -> None:
        """A markdown table; cells are formatted with `fmt` (significant figures) unless strings."""
        lines = [] if caption is None else [f"*{caption}*", ""]
        lines.append("| " + " | ".join(cell(h) for h in headers) + " |")
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        for row in rows:
            lines.append("| " + " | ".join(cell(c) if isinstance(c, str) else fmt(c) for c in row) + " |")
        self.blocks.append("\n".join(lines))

    def figure(self, fig, stem: str, caption: str) -> None:
        """Save a matplotlib figure as `NAME-stem.png` and link it."""
        filename = f"{self.name}-{stem}.png"
        save_figure(fig, self.out / filename)
        self.blocks.append(f"![{caption}]({filename})\n\n*{caption}*")

    def markdown(self) -> str:
        mode = "quick (CI) settings" if self.quick else "default settings"
        head = [
            f"## {self.title}",
            "",
            f"> **Claim.** {self.claim}",
            "",
            f"`sgjax reproduce {self.name}{' --quick' if self.quick else ''}` — {mode}; "
            f"{self.data.get('seconds', 0):.0f} s on {self.data['machine']}.",
        ]
        blocks = list(self.blocks)
        if self.data.get("phases"):
            spent = ", ".join(f"{name} {sec:.0f} s" for name, sec in self.data["phases"].items())
            blocks.append(f"*Time by phase: {spent}.*")
        return "\n".join(head) + "\n\n" + "\n\n".join(blocks) + "\n"

    def write(self) -> pathlib.Path:
        self.data["seconds"] = time.perf_counter() - self.started
        self.data["quick"] = self.quick
        self.data["machine"] = f"{platform.machine()} {platform.system()}, {_cores()} cores"
        self.data["versions"] = versions()
        atomic_write(self.out / f"{self.name}.json", json.dumps(_plain(self.data), indent=1).encode())
        path = self.out / f"{self.name}.md"
        atomic_write(path, self.markdown().encode())
        return path


def _cores() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def pyplot():
    return _pyplot()
