"""The fused strategy: the whole integration of a block of trajectories in one kernel.

Under XLA, `jax.vmap(diffrax.diffeqsolve)` (and the shared-step solve) is a while loop
driven from the host, each step a sequence of small kernels; on a GPU that caps a
large ensemble near 1% of the device's peak (DiffEqGPU.jl measured a fused kernel per
block of trajectories 69× faster than `jit(vmap(diffrax))`).
[`sgjax.experimental.Fused`][] writes that kernel with Pallas: each program of the grid integrates `block` trajectories, one
per lane of a vector, from `t0` to the last observation time, inside one kernel
launch, with the model's own `vector_field` turned into lane arithmetic by
`sgjax._internal._scalarize`.

Each lane takes its own adaptive steps (like DiffEqGPU's per-thread integration):
explicit Runge–Kutta steps from the simulator's solver's Butcher tableau, with the
diffrax `PIDController`'s accept/reject test and step-size update per trajectory.
The loop runs over observation times: inside, lanes step until they reach the next
observation time, then wait (masked) for the slowest lane of the block; the state
is written to the output row for that time, the same row for every lane.

Steps are cut short to land exactly on each observation time (the default). The
alternative, `interpolate=True`, lets steps run past observation times and reads
each from the solver's dense output as diffrax does: fewer steps per trajectory
(SIR on a daily grid: ~40 instead of ~100 over 100 days), but lanes then step at
different times, and lanes run in lockstep, so the block pays for the union of its
lanes' steps: measured 181 lockstep iterations against 101 for 256 SIR draws.

Without a GPU the same loop runs as ordinary jitted JAX with the lanes being the whole
chunk (a "fused lax loop"), which XLA compiles to one while loop over `(chunk,)`
vectors. Pallas's interpreter runs the kernel itself (jitted, as fast on CPU: SIR
140k/s either way for 4,096 draws on 2 cores, but twice the compile time, 3.0 s
against 1.5 s), which is how the tests check the kernel without a GPU.

Here: the strategy and the two ways of running the loop (a Pallas kernel, a jitted
loop); the plan and lane arithmetic are in `_plan.py`, the loop itself in `_loop.py`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .._simulation import AbstractStrategy
from ._loop import integrate
from ._plan import Plan


def _is_pow2(n) -> bool:
    return isinstance(n, int) and n >= 1 and (n & (n - 1)) == 0


class Fused(AbstractStrategy):
    """The whole integration of a block of trajectories in one kernel, each
    trajectory (one lane) with its own adaptive steps — for fast forward simulation
    on a GPU. No gradients flow through it.

    Experimental: the Pallas kernel has been checked against diffrax in Pallas's
    interpreter on CPU but has not yet run on a GPU, where it is meant to pay off; its
    interface may change, and it may be removed if on a GPU it does not beat
    [`sgjax.SharedStep`][].

    From the model's own `vector_field` (traced once and run lane by lane; see
    `sgjax/_internal/_scalarize.py` for what it may contain), the simulator's explicit
    Runge–Kutta solver (`diffrax.Tsit5`, `Dopri5`, `Dopri8`, `Bosh3`, `Heun`, `Ralston`,
    `Midpoint`: any with a Butcher tableau) and its `diffrax.PIDController` (the
    same accept/reject rule and step-size update as diffrax, PID terms included,
    applied per trajectory with diffrax's default RMS error norm or the controller's
    own) or `diffrax.ConstantStepSize` (each observation interval split into
    `ceil(Δ/dt0)` equal steps). A trajectory fails (`ok=False`)
    when it needs more than `max_steps` steps in all or its state stops being
    finite; the rest of its block is unaffected.

    **Arguments:**

    - `block`: trajectories per kernel program, a power of two; with `num_warps=4`,
        128 is one trajectory per GPU thread.
    - `interpolate`: with adaptive steps, `False` (default) cuts steps short to land
        exactly on every observation time; `True` lets them run on and takes each
        observation from the solver's dense output (diffrax's interpolation class for
        that solver), as diffrax does. Fewer steps per trajectory, but lanes step out
        of phase, and a block runs in lockstep: see the module notes.
    - `num_warps`: warps per program of the Triton kernel.
    - `pallas`: run the Pallas kernel (`True`) or the same loop as ordinary jitted JAX
        over the whole chunk (`False`). `None` (default): the kernel on a GPU, JAX
        elsewhere (as fast as Pallas's interpreter on CPU, and half its compile time).
    - `interpret`: run the Pallas kernel in Pallas's interpreter; `None` (default):
        unless the default backend is a GPU.

    **Example:**

    ```python
    sims = sgjax.simulate(simulator, 2**20, key=key, strategy=sgjax.experimental.Fused(), chunk_size=2**20)
    ```
    """

    block: int = eqx.field(default=128, static=True)
    interpolate: bool = eqx.field(default=False, static=True)
    num_warps: int = eqx.field(default=4, static=True)
    pallas: bool | None = eqx.field(default=None, static=True)
    interpret: bool | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if not _is_pow2(self.block):
            raise ValueError(f"`block` must be a power of two (Triton's vectors are), got {self.block!r}.")
        if not _is_pow2(self.num_warps):
            raise ValueError(f"`num_warps` must be a power of two, got {self.num_warps!r}.")

    def solve(self, simulator, theta):
        names = sorted(theta)
        dtype = simulator.ts.dtype
        plan = Plan(simulator, names, dtype, self.interpolate)
        times = jnp.concatenate([jnp.asarray([simulator.t0], dtype), simulator.ts])
        theta_mat = jnp.stack([jnp.asarray(theta[k], dtype) for k in names])  # (params, batch)
        aux = plan.aux.vector()
        on_gpu = jax.default_backend() == "gpu"
        use_pallas = on_gpu if self.pallas is None else self.pallas
        if not use_pallas:
            return _solve_lax(plan, times, theta_mat, aux)
        interpret = (not on_gpu) if self.interpret is None else self.interpret
        return _solve_pallas(plan, times, theta_mat, aux, self.block, self.num_warps, interpret)


def _solve_lax(plan, times, theta_mat, aux):
    n = theta_mat.shape[1]
    aux_values = [aux[i] for i in range(plan.aux.size)]

    def save(k, y, saved):
        return lax.dynamic_update_index_in_dim(saved, jnp.stack(y), k, 0)

    saved = jnp.zeros((plan.n_times, plan.n_state, n), plan.dtype)
    ok, ys = integrate(plan, lambda k: times[k], list(theta_mat), aux_values, save, saved, n)
    return ys, ok


def _solve_pallas(plan, times, theta_mat, aux, block, num_warps, interpret):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pltriton

    n_params, n = theta_mat.shape
    padded = -(-n // block) * block
    if padded != n:  # pad with copies of the last draw: valid parameters, discarded
        theta_mat = jnp.concatenate([theta_mat, jnp.repeat(theta_mat[:, -1:], padded - n, axis=1)], axis=1)
    n_aux = plan.aux.size

    def kernel(times_ref, aux_ref, theta_ref, ys_ref, ok_ref):
        theta_lanes = [theta_ref[p, :] for p in range(n_params)]
        aux_values = [aux_ref[i] for i in range(n_aux)]

        def save(k, y, saved):
            for s, v in enumerate(y):
                ys_ref[k, s, :] = v
            return saved

        ok, _ = integrate(plan, lambda k: times_ref[k], theta_lanes, aux_values, save, None, block)
        ok_ref[:] = ok.astype(jnp.int32)

    ys, ok = pl.pallas_call(
        kernel,
        grid=(padded // block,),
        in_specs=[
            pl.BlockSpec((plan.n_times,), lambda i: (0,)),
            pl.BlockSpec((aux.shape[0],), lambda i: (0,)),
            pl.BlockSpec((n_params, block), lambda i: (0, i)),
        ],
        out_specs=[
            pl.BlockSpec((plan.n_times, plan.n_state, block), lambda i: (0, 0, i)),
            pl.BlockSpec((block,), lambda i: (i,)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((plan.n_times, plan.n_state, padded), plan.dtype),
            jax.ShapeDtypeStruct((padded,), jnp.int32),
        ],
        interpret=interpret,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=1),
        name="sgjax_fused_ode",
    )(times, aux, theta_mat)
    return ys[..., :n], ok[:n] > 0
