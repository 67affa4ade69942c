"""Moved to `sgjax/_internal/hostmem.py`; this shim keeps old imports working until the
package regroup (issue 25) updates them."""

from ._internal.hostmem import empty as empty
