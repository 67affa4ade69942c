"""Small real datasets shipped with sgjax (no download at run time)."""

import datetime
import pathlib

import equinox as eqx
import numpy as np

from .._io import read_csv


_HERE = pathlib.Path(__file__).parent


class Dataset(eqx.Module):
    """An observed series.

    **Fields:** `times` `(time,)` and `observations` `(time, channels)` as NumPy
    arrays (the same word as [`sgjax.Simulation`][]'s), `mask` (`True` where
    observed), `columns` (channel names), `population` (`None` where it does not
    apply), `start` (the calendar date of the first time), `source` (the citation),
    `path` (the CSV).
    """

    times: np.ndarray
    observations: np.ndarray
    mask: np.ndarray
    columns: tuple[str, ...]
    population: int | None
    start: datetime.date
    source: str
    path: pathlib.Path

    @property
    def values(self) -> np.ndarray:
        """The old name of `observations`, kept working."""
        return self.observations


def boarding_school(columns=("confined",)) -> Dataset:
    """Influenza A (H1N1) in an English boys' boarding school, 1978: the number of
    boys confined to bed on each of 14 days from 1978-01-22, out of 763 boys, and the
    number convalescent.

    A classic test case for the SIR model: the school is a closed population and
    nearly every boy was exposed. Source: British Medical Journal, 4 March 1978,
    1(6112):587.

    **Arguments:** `columns`: any of `"confined"` (default) and `"convalescent"`.
    """
    path = _HERE / "boarding_school.csv"
    columns = _columns(columns, ("confined", "convalescent"))
    times, values, mask = read_csv(path, columns=list(columns), time_column="day")
    return Dataset(
        times=times,
        observations=values,
        mask=mask,
        columns=columns,
        population=763,
        start=datetime.date(1978, 1, 22),
        source="Anonymous, 'Influenza in a boarding school', British Medical Journal, 4 March 1978, 1(6112):587",
        path=path,
    )


def hudson_bay(columns=("hare", "lynx")) -> Dataset:
    """Snowshoe hare and Canadian lynx pelts traded by the Hudson's Bay Company, in
    thousands, each year from 1900 to 1920 (`times` are the years): the classic test
    case for the Lotka–Volterra predator–prey model.

    Sources: MacLulich (1937) for hares, Elton & Nicholson (1942) for lynx, as
    tabulated by Odum (1953); see the CSV's header.

    **Arguments:** `columns`: any of `"hare"` and `"lynx"` (default both).
    """
    path = _HERE / "hudson_bay.csv"
    columns = _columns(columns, ("hare", "lynx"))
    times, values, mask = read_csv(path, columns=list(columns), time_column="year")
    return Dataset(
        times=times,
        observations=values,
        mask=mask,
        columns=columns,
        population=None,
        start=datetime.date(1900, 1, 1),
        source=(
            "Hudson's Bay Company fur returns: MacLulich (1937), University of Toronto Studies, "
            "Biological Series 43 (hare); Elton & Nicholson (1942), Journal of Animal Ecology "
            "11(2):215-244 (lynx); as tabulated by Odum (1953)"
        ),
        path=path,
    )


def _columns(columns, known) -> tuple[str, ...]:
    columns = (columns,) if isinstance(columns, str) else tuple(columns)
    unknown = [c for c in columns if c not in known]
    if unknown or not columns:
        raise ValueError(f"Unknown column(s) {unknown}; choose from {list(known)}.")
    return columns
