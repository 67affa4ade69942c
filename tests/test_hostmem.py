"""Reused host memory for large outputs: opt-in (`SGJAX_HOST_POOL=1`), reuse only after
death, the size cap."""

import gc

import numpy as np
import pytest

from sgjax._internal import _hostmem as _hostmem


MB = 1 << 20


def address(a):
    return a.__array_interface__["data"][0]


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(_hostmem, "_POOL", _hostmem._Pool())
    monkeypatch.setenv("SGJAX_HOST_POOL", "1")
    monkeypatch.setenv("SGJAX_HOST_POOL_BYTES", str(16 * MB))
    return _hostmem._POOL


def test_memory_is_reused_only_once_nothing_references_it(pool):
    a = _hostmem.empty((2 * MB // 4,), np.float32)
    assert a.shape == (2 * MB // 4,) and a.dtype == np.float32
    a[:] = 7.0
    where = address(a)
    view = a[10:20]
    del a
    gc.collect()
    b = _hostmem.empty((2 * MB // 4,), np.float32)  # the view keeps the first alive
    assert address(b) != where
    np.testing.assert_array_equal(view, 7.0)
    b[:] = 1.0
    np.testing.assert_array_equal(view, 7.0)  # writing b never touches the live view
    del view
    gc.collect()
    assert pool.idle >= 2 * MB
    c = _hostmem.empty((MB // 8, 2), np.float64)  # same size, another shape and dtype
    assert address(c) == where
    assert c.shape == (MB // 8, 2) and c.dtype == np.float64 and c.flags.writeable


def test_a_block_serves_at_most_twice_its_request(pool):
    a = _hostmem.empty((8 * MB,), np.uint8)
    where = address(a)
    del a
    gc.collect()
    assert address(_hostmem.empty((2 * MB,), np.uint8)) != where  # 4x: not reused
    assert address(_hostmem.empty((5 * MB,), np.uint8)) == where


def test_the_pool_keeps_at_most_its_limit_idle(pool):
    arrays = [_hostmem.empty((6 * MB,), np.uint8) for _ in range(4)]
    del arrays
    gc.collect()
    assert pool.idle == 12 * MB  # two of the four fit under 16 MB


def test_small_arrays_and_a_zero_limit_use_numpy(pool, monkeypatch):
    assert _hostmem.empty((100,), np.float32).base is None
    monkeypatch.setenv("SGJAX_HOST_POOL_BYTES", "0")
    a = _hostmem.empty((4 * MB,), np.uint8)
    assert a.base is None
    del a
    gc.collect()
    assert pool.idle == 0


def test_the_pool_is_off_by_default(monkeypatch):
    # Without SGJAX_HOST_POOL=1, large arrays are plain np.empty: nothing is pooled,
    # and a dead array's memory is never handed out again by sgjax.
    monkeypatch.setattr(_hostmem, "_POOL", _hostmem._Pool())
    for value in (None, "0", ""):
        if value is None:
            monkeypatch.delenv("SGJAX_HOST_POOL", raising=False)
        else:
            monkeypatch.setenv("SGJAX_HOST_POOL", value)
        a = _hostmem.empty((4 * MB,), np.uint8)
        assert a.shape == (4 * MB,) and a.dtype == np.uint8 and a.flags.writeable and a.flags.owndata
        del a
        gc.collect()
        assert _hostmem._POOL.idle == 0 and not _hostmem._POOL.sizes


def test_a_bad_switch_is_reported(monkeypatch):
    monkeypatch.setenv("SGJAX_HOST_POOL", "yes")
    with pytest.raises(ValueError, match="SGJAX_HOST_POOL must be 1 .* or 0"):
        _hostmem.empty((4 * MB,), np.uint8)


def test_a_bad_limit_is_reported(monkeypatch):
    monkeypatch.setenv("SGJAX_HOST_POOL", "1")
    monkeypatch.setenv("SGJAX_HOST_POOL_BYTES", "1GB")
    with pytest.raises(ValueError, match="SGJAX_HOST_POOL_BYTES.*whole number of bytes"):
        _hostmem.empty((4 * MB,), np.uint8)
