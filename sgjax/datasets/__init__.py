"""Small real datasets shipped with sgjax (no download at run time)."""

import datetime
import pathlib

import equinox as eqx
import numpy as np

from .._io import read_csv

_HERE = pathlib.Path(__file__).parent


class Dataset(eqx.Module):
    """An observed series.

    **Fields:** `times` `(time,)` and `values` `(time, channels)` as NumPy arrays,
    `mask` (`True` where observed), `columns` (channel names), `population`,
    `start` (the calendar date of time 1), `source` (the citation), `path` (the CSV).
    """

    times: np.ndarray
    values: np.ndarray
    mask: np.ndarray
    columns: tuple[str, ...]
    population: int
    start: datetime.date
    source: str
    path: pathlib.Path


def boarding_school() -> Dataset:
    """Influenza A (H1N1) in an English boys' boarding school, 1978: the number of
    boys confined to bed on each of 14 days from 1978-01-22, out of 763 boys.

    A classic test case for the SIR model: the school is a closed population and
    nearly every boy was exposed. Source: British Medical Journal, 4 March 1978,
    1(6112):587.
    """
    path = _HERE / "boarding_school.csv"
    times, values, mask = read_csv(path, columns=["confined"], time_column="day")
    return Dataset(
        times=times,
        values=values,
        mask=mask,
        columns=("confined",),
        population=763,
        start=datetime.date(1978, 1, 22),
        source="Anonymous, 'Influenza in a boarding school', British Medical Journal, 4 March 1978, 1(6112):587",
        path=path,
    )
