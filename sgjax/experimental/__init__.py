"""Features that work and are tested, but whose worth is not yet established; their
interface may change, and each may be removed, without the notice a public API gets.

- [`sgjax.experimental.Fused`][]: the whole integration of a block of trajectories in
  one Pallas kernel. Checked against diffrax on CPU (in Pallas's interpreter and as a
  jitted loop); here until it has run on a GPU, where it is meant to be fastest.
"""

from ._fused import Fused as Fused
