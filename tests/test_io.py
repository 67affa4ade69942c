"""Saved files: the header's own checksum, declared sizes checked before
allocation, and the checkpoint format sharing them."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgjax import _io


def _pair(tmp_path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    _io.write_pair(tmp_path / "thing", tree, {"kind": "thing", "prior": {"beta": [0.0, 1.0]}, "labels": ["a", "b"]})
    return tree, tmp_path / "thing"


def test_the_header_checksum_covers_every_field_and_the_payload_hash(tmp_path):
    tree, stem = _pair(tmp_path)
    header = _io.read_header(stem.with_suffix(".json"), "thing")
    assert header["header_sha256"] == _io.header_sha256(header) and header["format_version"] == 2
    loaded = _io.read_payload(stem, header, eqx.filter_eval_shape(lambda: tree))
    np.testing.assert_array_equal(loaded["w"], tree["w"])
    # The canonical form ignores the JSON's layout, not its content.
    text = stem.with_suffix(".json").read_text()
    stem.with_suffix(".json").write_text(json.dumps(json.loads(text), indent=None, sort_keys=True))
    assert _io.read_header(stem.with_suffix(".json"), "thing") == header
    for bad in (
        {**header, "prior": {"beta": [0.0, 9.0]}},  # a bound 1.0 -> 9.0
        {**header, "labels": ["b", "a"]},  # swapped labels
        {**header, "sha256": _io.sha256(b"another payload")},  # the payload's hash replaced
        {k: v for k, v in header.items() if k != "header_sha256"},
    ):
        stem.with_suffix(".json").write_text(json.dumps(bad))
        with pytest.raises(_io.FileFormatError, match="does not match its own checksum: the header was modified"):
            _io.read_header(stem.with_suffix(".json"), "thing")


def test_declared_sizes_are_checked_before_anything_is_allocated(tmp_path):
    _, stem = _pair(tmp_path)
    header = _io.read_header(stem.with_suffix(".json"), "thing")
    # 20,000 x 20,000 float32: 1.6 GB declared, nothing allocated (shapes only).
    huge = {"w": jax.ShapeDtypeStruct((20_000, 20_000), jnp.float32), "b": jax.ShapeDtypeStruct((3,), jnp.float32)}
    declared = r"thing.json declares arrays of 1,600,000,012 bytes, but .*thing.eqx holds \d+"
    with pytest.raises(_io.FileFormatError, match=declared):
        _io.read_payload(stem, header, huge)


def test_read_csv_reads_a_byte_order_mark_and_refuses_binary(tmp_path):
    plain, bom, binary = tmp_path / "plain.csv", tmp_path / "bom.csv", tmp_path / "binary.csv"
    plain.write_text("time,cases\n1,3\n2,\n")
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())  # Excel's "CSV UTF-8"
    for a, b in zip(_io.read_csv(plain), _io.read_csv(bom), strict=True):
        np.testing.assert_array_equal(a, b)
    binary.write_bytes(b"time,cases\n\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match=r"binary.csv is not a text CSV file \(byte 11 is not UTF-8\)"):
        _io.read_csv(binary)


def test_plotting_keeps_the_users_matplotlib_backend(tmp_path):
    # A notebook's inline backend must survive sgjax's plots (switching to Agg turned
    # every later figure of the notebook off).
    import matplotlib

    from sgjax import _plots

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        _plots.training_curve(
            {"step": [1, 2], "loss": [1.0, 0.5], "val_step": [2], "val_loss": [0.6]}, tmp_path / "curve.png"
        )
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "curve.png").stat().st_size > 0
    finally:
        matplotlib.use(before)
