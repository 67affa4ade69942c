"""What every benchmark script shares: timing, the machine line, and writing a section
of benchmarks/RESULTS.md between its own markers (never touching anyone else's)."""

import os
import platform
import subprocess
import time
from pathlib import Path

import jax


HERE = Path(__file__).parent
RESULTS = HERE / "RESULTS.md"


def best_of(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls of `fn` (its result is waited for);
    call it once first if it needs compiling."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def load() -> str:
    """The 1-minute load average, to print beside timings on a shared machine."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def machine() -> str:
    """One line naming the machine, the backend and the versions that matter."""
    import diffrax
    import equinox
    import optax

    import sgjax

    dev = jax.devices()[0]
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {len(jax.devices())} × {dev.platform} "
        f"({dev.device_kind}); Python {platform.python_version()}, sgjax {sgjax.__version__}, "
        f"jax {jax.__version__}, diffrax {diffrax.__version__}, equinox {equinox.__version__}, "
        f"optax {optax.__version__}; load {load()}"
    )


def revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def write_section(name: str, title: str, text: str) -> None:
    """Put `text` under `## title` between `<!-- name:begin -->` and
    `<!-- name:end -->` in RESULTS.md, replacing what was there before, or append the
    section if the markers are absent. Everything outside the markers is kept."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{begin}\n## {title}\n\n{text.rstrip()}\n{end}"
    if begin in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(new)
