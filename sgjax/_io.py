"""Files: atomic writes, hashed payloads, and reading observed series from CSV.

Nothing is ever executed from a file sgjax reads: payloads hold only array leaves
(`equinox.tree_serialise_leaves`) and are checked against a SHA-256 recorded in a
JSON header before they are read into a skeleton built by sgjax itself. The header
carries a SHA-256 of itself too, so a changed prior bound or a swapped label is
refused, not loaded.
"""

import csv
import hashlib
import io
import json
import os
import pathlib
import tempfile

import equinox as eqx
import jax
import numpy as np


#: Bumped whenever the layout of saved files changes; files of another format are
#: refused with a clear error rather than misread. 2: the header carries a hash of
#: itself (`header_sha256`); a format-1 header cannot be verified, so it is refused.
FORMAT_VERSION = 2


class FileFormatError(ValueError):
    """A saved sgjax file is missing, truncated, tampered with, or from another
    format version."""


def atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new
    one, never a partial file: write a temporary file beside it, flush it to disk,
    then rename it over `path`."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def serialise(tree) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def header_sha256(header: dict) -> str:
    """The SHA-256 of a header in canonical JSON (sorted keys, no spaces), without its
    own `header_sha256` field. The header holds the payload's hash, so this one covers
    the payload as well."""
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def versions() -> dict:
    import diffrax
    import jax
    import optax

    from . import __version__

    return {
        "sgjax": __version__,
        "jax": jax.__version__,
        "equinox": eqx.__version__,
        "optax": optax.__version__,
        "diffrax": diffrax.__version__,
    }


def write_pair(stem: pathlib.Path, tree, header: dict) -> None:
    """Save `tree`'s leaves to `stem.eqx` and `header` (plus format, versions, the
    payload's hash and the header's own hash) to `stem.json`. The JSON is written
    last: it is the commit record, and a payload without a matching JSON is never
    loaded."""
    stem = pathlib.Path(stem)
    payload = serialise(tree)
    header = {"format_version": FORMAT_VERSION, "versions": versions(), **header, "sha256": sha256(payload)}
    header = json.loads(json.dumps(header))  # JSON's types (lists, string keys): what read_header sees
    header["header_sha256"] = header_sha256(header)
    atomic_write(stem.with_suffix(".eqx"), payload)
    atomic_write(stem.with_suffix(".json"), json.dumps(header, indent=2).encode())


def read_header(path: pathlib.Path, kind: str) -> dict:
    """Read and check a JSON header written by `write_pair`."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No saved sgjax {kind} at {path}.")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(f"{path} is not a valid sgjax {kind} file (bad JSON: {e}).") from None
    if not isinstance(header, dict) or header.get("kind") != kind:
        raise FileFormatError(f"{path} is not an sgjax {kind} file.")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        saved = header.get("versions", {}).get("sgjax", "unknown")
        raise FileFormatError(
            f"{path} was saved in file format {version} (sgjax {saved}); this sgjax "
            f"reads format {FORMAT_VERSION}. Load it with the sgjax version that saved it, "
            "or retrain."
        )
    if header.get("header_sha256") != header_sha256(header):
        raise FileFormatError(
            f"{path} does not match its own checksum: the header was modified after it was "
            "saved (a changed value, label or bound would silently change every result). "
            "Restore the original file or retrain."
        )
    return header


def read_payload(stem: pathlib.Path, header: dict, skeleton):
    """Load the `.eqx` payload beside a header into `skeleton`, after checking its
    hash and that the payload is large enough to hold every array of `skeleton`.

    Pass `eqx.filter_eval_shape(build, ...)` as `skeleton` (leaves of shape and dtype
    only) and nothing is allocated before those checks: a header declaring a huge
    network is refused at once."""
    path = pathlib.Path(stem).with_suffix(".eqx")
    if not path.exists():
        raise FileFormatError(f"{path} is missing: the saved files are incomplete.")
    payload = path.read_bytes()
    if sha256(payload) != header.get("sha256"):
        raise FileFormatError(
            f"{path} does not match the checksum recorded in {path.with_suffix('.json').name}: "
            "the file is truncated, corrupted or was modified. Restore it or retrain."
        )
    declared = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(skeleton) if hasattr(a, "dtype"))
    if declared > len(payload):
        raise FileFormatError(
            f"{path.with_suffix('.json').name} declares arrays of {declared:,} bytes, but {path} "
            f"holds {len(payload):,}: the header does not describe this payload. Restore the "
            "original files or retrain."
        )
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), skeleton)
    except Exception as e:  # shape or dtype mismatch with the rebuilt skeleton
        raise FileFormatError(f"{path} does not fit the structure its header describes ({e}).") from None


def read_csv(path, columns=None, time_column: str = "time"):
    """Read observed series from a CSV file with a header row: one time column and
    one column per observed channel.

    **Arguments:**

    - `path`: the file.
    - `columns`: which columns to read as channels (default: every column but the
        time column).
    - `time_column`: the name of the time column.

    **Returns:** `(times (time,), values (time, channels), mask)`; empty cells and
    `NA`/`nan` are missing (`mask` False, value 0). The file is read as UTF-8, with
    or without a byte-order mark.
    """
    path = pathlib.Path(path)
    try:  # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not a text CSV file (byte {e.start} is not UTF-8); save the data as CSV (UTF-8)."
        ) from None
    if not rows:
        raise ValueError(f"{path} is empty; expected a header row such as `{time_column},cases`.")
    header = [h.strip() for h in rows[0]]
    if time_column not in header:
        raise ValueError(
            f"{path} has no time column {time_column!r}; its columns are {header}. Name the "
            f"time column {time_column!r} or pass the right name."
        )
    if columns is None:
        columns = [h for h in header if h != time_column]
    columns = [columns] if isinstance(columns, str) else list(columns)
    missing = [c for c in columns if c not in header]
    if missing or not columns:
        raise ValueError(f"{path} has columns {header}; cannot find {missing or 'any value column'}.")
    idx = [header.index(c) for c in columns]
    ti = header.index(time_column)
    times, values, mask = [], [], []
    for line, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise ValueError(f"{path}, line {line}: {len(r)} fields, expected {len(header)}.")
        try:
            times.append(float(r[ti]))
        except ValueError:
            raise ValueError(f"{path}, line {line}: time {r[ti]!r} is not a number.") from None
        row_v, row_m = [], []
        for i in idx:
            cell = r[i].strip()
            if cell.lower() in ("", "na", "nan"):
                row_v.append(0.0)
                row_m.append(False)
                continue
            try:
                row_v.append(float(cell))
            except ValueError:
                raise ValueError(f"{path}, line {line}: {header[i]}={cell!r} is not a number.") from None
            row_m.append(True)
        values.append(row_v)
        mask.append(row_m)
    times = np.asarray(times)
    if np.any(np.diff(times) <= 0):
        raise ValueError(f"{path}: the times must be strictly increasing.")
    return (
        times,
        np.asarray(values, float).reshape(len(times), len(idx)),
        np.asarray(mask, bool).reshape(len(times), len(idx)),
    )


def rounded(x):
    """`round(x)` for a JSON report; `None` stays `None` (a figure not measured)."""
    return None if x is None else round(x)
