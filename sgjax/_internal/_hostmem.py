"""Reused host memory for large outputs (`simulate`'s arrays); opt-in.

Writing a fresh NumPy array of a hundred megabytes costs a page fault per 4 KiB
page the first time each page is touched; glibc returns large blocks to the kernel
as soon as they are freed, so every `simulate` call pays those faults again. Measured
on this project's 2-core CPU VM (where a first touch is particularly expensive):
copying a 1,024-sample SIR chunk (2.1 MB) into fresh memory took 1.5-5.9 ms,
into memory touched before 0.2 ms; `simulate` of 65,536 samples ran 1.2-1.4x faster
into reused memory.

That gain has been measured on one kind of machine only, so the pool is off unless
the environment variable `SGJAX_HOST_POOL=1` is set (read at each call); without it
`empty` is `np.empty`. With it, `empty` hands out arrays backed by anonymous
memory maps that return to a small pool when the last array (or view) on them is
garbage collected, instead of to the kernel; the next output of a similar size
reuses them. Nothing live is ever reused: a block goes back only once nothing
references it. The pool keeps at most `SGJAX_HOST_POOL_BYTES` bytes idle (default
1 GiB; `0` turns the pool off too).
"""

import bisect
import ctypes
import math
import mmap
import os
import threading
import weakref
from typing import Any, cast

import numpy as np


#: Smaller arrays come from `np.empty`: malloc's heap reuses them already.
_MIN_BYTES = 1 << 20


def _enabled() -> bool:
    value = os.environ.get("SGJAX_HOST_POOL", "0").strip()
    if value not in ("0", "1", ""):
        raise ValueError(
            f"SGJAX_HOST_POOL must be 1 (reuse the memory of dead outputs) or 0 (plain np.empty, the "
            f"default), got {value!r}."
        )
    return value == "1"


def _limit() -> int:
    value = os.environ.get("SGJAX_HOST_POOL_BYTES", str(1 << 30))
    try:
        limit = int(value)
    except ValueError:
        raise ValueError(
            f"SGJAX_HOST_POOL_BYTES must be a whole number of bytes (0 turns the pool off), got {value!r}."
        ) from None
    return max(limit, 0)


class _Pool:
    """Idle memory maps by size; thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sizes: list[int] = []  # sorted sizes of the idle maps, one entry per map
        self.maps: dict[int, list[mmap.mmap]] = {}
        self.idle = 0  # bytes held idle

    def take(self, size: int) -> mmap.mmap | None:
        """An idle map of at least `size` bytes and at most twice that, or `None`."""
        with self.lock:
            i = bisect.bisect_left(self.sizes, size)
            if i == len(self.sizes) or self.sizes[i] > 2 * size:
                return None
            found = self.sizes.pop(i)
            self.idle -= found
            return self.maps[found].pop()

    def give(self, m: mmap.mmap, limit: int) -> None:
        """Keep `m` idle if it fits under `limit`; otherwise let it be unmapped."""
        with self.lock:
            if self.idle + len(m) > limit:
                return
            bisect.insort(self.sizes, len(m))
            self.maps.setdefault(len(m), []).append(m)
            self.idle += len(m)


_POOL = _Pool()


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """`np.empty(shape, dtype)`; with `SGJAX_HOST_POOL=1`, large arrays reuse the
    memory of dead ones (see the module notes). The contents are arbitrary."""
    dtype = np.dtype(dtype)
    if not _enabled():
        return np.empty(shape, dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    limit = _limit()
    if nbytes < _MIN_BYTES or limit == 0 or not hasattr(mmap, "MAP_PRIVATE"):  # small, off, or not POSIX
        return np.empty(shape, dtype)
    size = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    m = _POOL.take(size)
    if m is None:
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # The handle is what every array on this memory keeps alive (as its base); when
    # the last one is collected, the map goes back to the pool.
    handle = (ctypes.c_byte * len(m)).from_buffer(m)
    weakref.finalize(handle, _POOL.give, m, limit)
    # A ctypes array exports the buffer protocol; typeshed does not declare it.
    return np.frombuffer(cast(Any, handle), dtype, count=math.prod(shape)).reshape(shape)
