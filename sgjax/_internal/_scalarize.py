"""Run a per-trajectory function on *lanes*: the trajectory-wise arithmetic of a whole
block of trajectories as elementwise operations on vectors.

A user writes `vector_field(t, y, theta)` for one trajectory, on arrays of a few
elements (`y` of shape `(state,)`). [`sgjax.experimental.Fused`][] integrates a block of `B`
trajectories inside one kernel, where each trajectory is one lane of a `(B,)` vector.
This module turns the first into the second without asking the user for anything:
it traces the function once with `jax.make_jaxpr` and interprets the jaxpr with every
per-trajectory value of shape `s` held as a NumPy *object* array of shape `s` whose
entries are lane vectors (`(B,)` JAX arrays), 0-d JAX arrays (values every lane
shares, such as a fixed-step time), or NumPy scalars (constants known at trace time,
folded where possible).

So structural operations (slicing, stacking, reshaping, broadcasting) become NumPy
bookkeeping at trace time, reductions and `dot_general` on the tiny per-trajectory
arrays are unrolled, and only elementwise primitives reach the kernel — each bound
on `(B,)` vectors. That is what a Triton kernel handles best: no 2-D tiles, no
stack/concatenate/slicing inside the kernel, no sizes that are not powers of two.

Only public JAX APIs are used (`jax.make_jaxpr`, `jax.extend.core`); primitives are
recognised by name.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.core
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax import lax


#: Primitives applied entry by entry: each output entry depends only on the entries
#: at the same index of the inputs (scalar inputs broadcast).
_ELEMENTWISE = frozenset(
    """
    abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type
    copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag
    integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not or
    population_count pow real reduce_precision rem round rsqrt select_n shift_left
    shift_right_arithmetic shift_right_logical sign sin sinh sqrt square sub tan tanh xor
    """.split()
)

#: Primitives that call a sub-jaxpr with the same inputs (their derivative rules are
#: irrelevant here: the fused strategy is forward-only).
_CALLS = frozenset(
    "pjit jit closed_call core_call custom_jvp_call custom_vjp_call custom_vjp_call_jaxpr "
    "remat checkpoint custom_lin".split()
)

_REDUCERS = {
    "reduce_sum": lax.add_p,
    "reduce_max": lax.max_p,
    "reduce_min": lax.min_p,
    "reduce_prod": lax.mul_p,
    "reduce_and": lax.and_p,
    "reduce_or": lax.or_p,
    "reduce_xor": lax.xor_p,
}

#: The most iterations of a loop with a trace-time trip count that are unrolled.
_MAX_UNROLL = 4096


class UnsupportedPrimitive(TypeError):
    """A primitive the lane interpreter cannot apply to per-trajectory arrays."""


def _const(value) -> np.ndarray:
    """A per-trajectory constant (NumPy, a concrete or a traced JAX array) as an object
    array of its entries: NumPy scalars, which keep their dtype, or 0-d tracers."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return value
    if not isinstance(value, jax.core.Tracer):
        value = np.asarray(value)
    out = np.empty(np.shape(value), object)
    for idx in np.ndindex(out.shape):
        out[idx] = value[idx]
    return out


def _leaf(value) -> np.ndarray:
    """An argument: an object array as it is; anything else is one lane value (a
    per-trajectory scalar)."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return value
    if isinstance(value, (np.ndarray, np.generic, int, float, bool)):
        return _const(value)
    out = np.empty((), object)
    out[()] = value
    return out


def lanes(values: Sequence[Any]) -> np.ndarray:
    """A per-trajectory vector (e.g. a state `y` of shape `(state,)`) from a sequence
    of lane values, one per component."""
    out = np.empty((len(values),), object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _is_const(x) -> bool:
    return isinstance(x, (np.generic, np.ndarray, int, float, bool))


def _materialise(x, dtype):
    """A lane entry as a JAX value of `dtype` (constants become 0-d arrays)."""
    if _is_const(x):
        return jnp.asarray(np.asarray(x).astype(dtype))
    return x if x.dtype == dtype else lax.convert_element_type(x, dtype)


def _apply(prim, entries, dtypes, params):
    """Bind an elementwise primitive on one entry of each input: constants are folded
    at trace time; otherwise 0-d values are broadcast to the lanes' shape."""
    if all(_is_const(e) for e in entries):
        with jax.ensure_compile_time_eval():
            out = prim.bind(*[jnp.asarray(np.asarray(e).astype(d)) for e, d in zip(entries, dtypes)], **params)
        return np.asarray(out)[()]
    vals = [_materialise(e, d) for e, d in zip(entries, dtypes)]
    shape = max((v.shape for v in vals), key=len)
    vals = [v if v.shape == shape else jnp.broadcast_to(v, shape) for v in vals]
    return prim.bind(*vals, **params)


def _elementwise(eqn, ins, name):
    out_aval = eqn.outvars[0].aval
    dtypes = [v.aval.dtype for v in eqn.invars]
    shape = out_aval.shape
    ins = [np.broadcast_to(x, shape) if x.shape != shape else x for x in ins]
    out = np.empty(shape, object)
    for idx in np.ndindex(shape):
        entries = [x[idx] for x in ins]
        if eqn.primitive.name == "select_n":
            out[idx] = _select(entries, dtypes, out_aval.dtype)
        else:
            out[idx] = _apply(eqn.primitive, entries, dtypes, eqn.params)
    return [out]


def _select(entries, dtypes, dtype):
    """`select_n` as a chain of two-way selects on a boolean predicate (the form
    every backend lowers, Triton included)."""
    pred, cases = entries[0], entries[1:]
    if _is_const(pred):
        return cases[int(pred)]
    if dtypes[0] == np.bool_ and len(cases) == 2:
        return _apply(lax.select_n_p, [pred, *cases], [np.bool_, dtype, dtype], {})
    out = cases[0]
    for k in range(1, len(cases)):
        is_k = _apply(lax.eq_p, [pred, np.asarray(k, dtypes[0])], [dtypes[0], dtypes[0]], {})
        out = _apply(lax.select_n_p, [is_k, out, cases[k]], [np.bool_, dtype, dtype], {})
    return out


def _fold(prim, items, dtype):
    acc = items[0]
    for x in items[1:]:
        acc = _apply(prim, [acc, x], [dtype, dtype], {})
    return acc


def _reduce(eqn, ins, name):
    (x,) = ins
    axes = tuple(eqn.params["axes"])
    dtype = eqn.invars[0].aval.dtype
    keep = [d for d in range(x.ndim) if d not in axes]
    moved = np.transpose(x, keep + list(axes))
    out_shape = tuple(x.shape[d] for d in keep)
    size = math.prod(x.shape[d] for d in axes)
    if size == 0:
        raise _unsupported(eqn, "a reduction over an empty axis")
    flat = moved.reshape(out_shape + (size,))
    out = np.empty(out_shape, object)
    for idx in np.ndindex(out_shape):
        out[idx] = _fold(_REDUCERS[name], list(flat[idx]), dtype)
    return [out]


def _dot_general(eqn, ins, name):
    lhs, rhs = ins
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = map(list, (lc, rc, lb, rb))
    dtype = eqn.outvars[0].aval.dtype
    lfree = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rfree = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    lt = np.transpose(lhs, lb + lfree + lc)
    rt = np.transpose(rhs, rb + rfree + rc)
    nb, nl, nr = len(lb), len(lfree), len(rfree)
    bshape, lshape, cshape = lt.shape[:nb], lt.shape[nb : nb + nl], lt.shape[nb + nl :]
    rshape = rt.shape[nb : nb + nr]
    out = np.empty(bshape + lshape + rshape, object)
    ldt, rdt = eqn.invars[0].aval.dtype, eqn.invars[1].aval.dtype
    for b in np.ndindex(bshape):
        for i in np.ndindex(lshape):
            for j in np.ndindex(rshape):
                terms = [
                    _apply(
                        lax.mul_p,
                        [_cast(lt[b + i + c], ldt, dtype), _cast(rt[b + j + c], rdt, dtype)],
                        [dtype, dtype],
                        {},
                    )
                    for c in np.ndindex(cshape)
                ]
                out[b + i + j] = _fold(lax.add_p, terms, dtype) if terms else np.zeros((), dtype)[()]
    return [out]


def _cast(x, src, dst):
    if src == dst:
        return x
    return _apply(lax.convert_element_type_p, [x], [src], {"new_dtype": dst, "weak_type": False, "sharding": None})


def _broadcast_in_dim(eqn, ins, name):
    (x,) = ins[:1]
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    expanded = x.reshape([x.shape[dims.index(d)] if d in dims else 1 for d in range(len(shape))])
    return [np.broadcast_to(expanded, shape)]


def _concrete_index(eqn, x, what):
    if not _is_const(x):
        raise _unsupported(eqn, f"{what} that differs between trajectories")
    return int(np.asarray(x))


def _dynamic_slice(eqn, ins, name):
    x, *starts = ins
    sizes = eqn.params["slice_sizes"]
    idx = []
    for d, (s, n) in enumerate(zip(starts, sizes)):
        s = min(max(_concrete_index(eqn, s[()], "an index"), 0), x.shape[d] - n)
        idx.append(slice(s, s + n))
    return [x[tuple(idx)]]


def _dynamic_update_slice(eqn, ins, name):
    x, update, *starts = ins
    out = x.copy()
    idx = []
    for d, (s, n) in enumerate(zip(starts, update.shape)):
        s = min(max(_concrete_index(eqn, s[()], "an index"), 0), x.shape[d] - n)
        idx.append(slice(s, s + n))
    out[tuple(idx)] = update
    return [out]


def _split(eqn, ins, name):
    (x,) = ins
    sizes, axis = eqn.params["sizes"], eqn.params["axis"]
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _iota(eqn, ins, name):
    p = eqn.params
    shape, dim = p["shape"], p["dimension"]
    values = np.arange(shape[dim], dtype=p["dtype"]).reshape([-1 if d == dim else 1 for d in range(len(shape))])
    return [_const(np.broadcast_to(values, shape))]


def _pad(eqn, ins, name):
    x, value = ins
    config = eqn.params["padding_config"]
    if any(interior != 0 or lo < 0 or hi < 0 for lo, hi, interior in config):
        raise _unsupported(eqn, "negative or interior padding")
    out = np.empty(eqn.outvars[0].aval.shape, object)
    out[...] = value[()]
    out[tuple(slice(lo, lo + n) for (lo, _, _), n in zip(config, x.shape))] = x
    return [out]


def _cumulative(prim):
    def rule(eqn, ins, name):
        (x,) = ins
        axis, reverse = eqn.params["axis"], eqn.params["reverse"]
        dtype = eqn.invars[0].aval.dtype
        moved = np.moveaxis(x, axis, -1)
        out = np.empty(moved.shape, object)
        order = range(moved.shape[-1] - 1, -1, -1) if reverse else range(moved.shape[-1])
        for idx in np.ndindex(moved.shape[:-1]):
            acc = None
            for k in order:
                acc = moved[idx + (k,)] if acc is None else _apply(prim, [acc, moved[idx + (k,)]], [dtype, dtype], {})
                out[idx + (k,)] = acc
        return [np.moveaxis(out, -1, axis)]

    return rule


_STRUCTURAL: dict[str, Callable] = {
    "slice": lambda e, ins, n: [
        ins[0][
            tuple(
                slice(s, l, st)
                for s, l, st in zip(
                    e.params["start_indices"], e.params["limit_indices"], e.params["strides"] or (1,) * ins[0].ndim
                )
            )
        ]
    ],
    "squeeze": lambda e, ins, n: [np.reshape(ins[0], e.outvars[0].aval.shape)],
    "reshape": lambda e, ins, n: [np.reshape(ins[0], e.outvars[0].aval.shape)],
    "expand_dims": lambda e, ins, n: [np.reshape(ins[0], e.outvars[0].aval.shape)],
    "broadcast_in_dim": _broadcast_in_dim,
    "concatenate": lambda e, ins, n: [np.concatenate(ins, axis=e.params["dimension"])],
    "stack": lambda e, ins, n: [np.stack(ins, axis=e.params["axis"])],
    "unstack": lambda e, ins, n: [
        np.take(ins[0], i, axis=e.params["axis"]) for i in range(ins[0].shape[e.params["axis"]])
    ],
    "split": _split,
    "transpose": lambda e, ins, n: [np.transpose(ins[0], e.params["permutation"])],
    "rev": lambda e, ins, n: [np.flip(ins[0], axis=tuple(e.params["dimensions"]))],
    "iota": _iota,
    "pad": _pad,
    "dynamic_slice": _dynamic_slice,
    "dynamic_update_slice": _dynamic_update_slice,
    "dot_general": _dot_general,
    "cumsum": _cumulative(lax.add_p),
    "cumprod": _cumulative(lax.mul_p),
    "cummax": _cumulative(lax.max_p),
    "cummin": _cumulative(lax.min_p),
    "optimization_barrier": lambda e, ins, n: list(ins),
    "sharding_constraint": lambda e, ins, n: list(ins),
    "reshard": lambda e, ins, n: list(ins),
    "stop_gradient": lambda e, ins, n: list(ins),
    **{name: _reduce for name in _REDUCERS},
}


def _unsupported(eqn, what: str | None = None) -> UnsupportedPrimitive:
    shapes = ", ".join(str(tuple(v.aval.shape)) for v in eqn.invars if hasattr(v.aval, "shape"))
    detail = f" ({what})" if what else ""
    return UnsupportedPrimitive(
        f"sgjax.experimental.Fused cannot run the primitive `{eqn.primitive.name}`{detail} on per-trajectory "
        f"arrays of shapes {shapes} inside its fused kernel: it integrates the model's "
        "vector field lane by lane and supports elementwise arithmetic, slicing, stacking, "
        "reshaping and small reductions. Rewrite that part of the model with those "
        "operations, or use sgjax.SharedStep() (or sgjax.PerTrajectory()), which run any "
        "JAX code."
    )


def _sub_jaxpr(params):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = params.get(key)
        if isinstance(sub, jex.ClosedJaxpr):
            return sub.jaxpr, [_const(c) for c in sub.consts]
        if isinstance(sub, jex.Jaxpr):
            return sub, []
    return None


def _cond(eqn, ins):
    index, *ops = ins
    branches = eqn.params["branches"]
    idx = index[()]
    if _is_const(idx):
        br = branches[int(np.clip(int(idx), 0, len(branches) - 1))]
        return _eval(br.jaxpr, [_const(c) for c in br.consts], ops)
    results = [_eval(br.jaxpr, [_const(c) for c in br.consts], ops) for br in branches]
    outs = []
    idt = eqn.invars[0].aval.dtype
    for k, var in enumerate(eqn.outvars):
        shape = var.aval.shape
        out = np.empty(shape, object)
        for i in np.ndindex(shape):
            cases = [np.broadcast_to(r[k], shape)[i] for r in results]
            out[i] = _select([idx, *cases], [idt] + [var.aval.dtype] * len(cases), var.aval.dtype)
        outs.append(out)
    return outs


def _scan(eqn, ins):
    p = eqn.params
    length, nconsts, ncarry = p["length"], p["num_consts"], p["num_carry"]
    if length > _MAX_UNROLL:
        raise _unsupported(eqn, f"a scan of length {length}, too long to unroll")
    consts, carry, xs = ins[:nconsts], ins[nconsts : nconsts + ncarry], ins[nconsts + ncarry :]
    body = p["jaxpr"]
    body_consts = [_const(c) for c in body.consts]
    ys = []
    steps = range(length - 1, -1, -1) if p["reverse"] else range(length)
    for i in steps:
        out = _eval(body.jaxpr, body_consts, [*consts, *carry, *[x[i] for x in xs]])
        carry, y = out[:ncarry], out[ncarry:]
        ys.append(y)
    if p["reverse"]:
        ys = ys[::-1]
    stacked = [
        np.stack([y[k] for y in ys]) if ys else np.empty(var.aval.shape, object)
        for k, var in enumerate(eqn.outvars[ncarry:])
    ]
    return [*carry, *stacked]


def _while(eqn, ins):
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, carry = ins[:cn], ins[cn : cn + bn], ins[cn + bn :]
    cj, bj = p["cond_jaxpr"], p["body_jaxpr"]
    for _ in range(_MAX_UNROLL):
        (pred,) = _eval(cj.jaxpr, [_const(c) for c in cj.consts], [*cconsts, *carry])
        if not _is_const(pred[()]):
            raise _unsupported(eqn, "a loop whose number of iterations differs between trajectories")
        if not bool(pred[()]):
            return carry
        carry = _eval(bj.jaxpr, [_const(c) for c in bj.consts], [*bconsts, *carry])
    raise _unsupported(eqn, f"a loop of more than {_MAX_UNROLL} iterations, too long to unroll")


def _eval(jaxpr, consts, args) -> list[np.ndarray]:
    env = {}

    def read(v):
        if isinstance(v, jex.Literal):
            return _const(np.asarray(v.val, dtype=cast(jax.core.ShapedArray, v.aval).dtype))
        return env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _ELEMENTWISE:
            outs = _elementwise(eqn, ins, name)
        elif name in _STRUCTURAL:
            outs = _STRUCTURAL[name](eqn, ins, name)
        elif name in _CALLS and (found := _sub_jaxpr(eqn.params)) is not None:
            sub, sub_consts = found
            outs = _eval(sub, sub_consts, ins[len(ins) - len(sub.invars) :])
        elif name == "cond":
            outs = _cond(eqn, ins)
        elif name == "scan":
            outs = _scan(eqn, ins)
        elif name == "while":
            outs = _while(eqn, ins)
        elif (
            not jex.jaxprs_in_params(eqn.params)
            and not eqn.effects
            and all(getattr(v.aval, "shape", None) == () for v in (*eqn.invars, *eqn.outvars))
            and len(eqn.outvars) == 1
        ):
            # A primitive on per-trajectory scalars without sub-programs or effects
            # maps scalars to a scalar: applied to lanes it acts lane by lane.
            outs = _elementwise(eqn, ins, name)
        else:
            raise _unsupported(eqn)
        for v, out in zip(eqn.outvars, outs):
            if not isinstance(v, jex.DropVar):
                env[v] = out
    return [read(v) for v in jaxpr.outvars]


class Scalarized:
    """A per-trajectory function, traced once, that runs on lanes.

    Call it with the same pytree structure as the example arguments, each leaf an
    object array from `lanes` (or a single lane value for a per-trajectory
    scalar); it returns the outputs' pytree with every leaf an object array of the
    per-trajectory shape whose entries are lane values or constants.

    Constants of the traced function that are themselves traced values of an
    enclosing computation (say, a model field that is a traced array) cannot be
    captured by a kernel: `Scalarized.traced_consts` lists them, and the caller
    passes replacements (e.g. read from a kernel input) as `traced=`.
    """

    def __init__(self, fn: Callable, *example_args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*example_args)
        self.jaxpr = closed.jaxpr
        self.consts = list(closed.consts)
        self.in_tree = jax.tree.structure(example_args)
        self.out_tree = jax.tree.structure(out_shape)
        self.name = getattr(fn, "__qualname__", repr(fn))

    @property
    def traced_consts(self) -> list:
        """The constants that are tracers of an enclosing trace, in order."""
        return [c for c in self.consts if isinstance(c, jax.core.Tracer)]

    def __call__(self, *args, traced: Sequence[np.ndarray] = ()):
        leaves, tree = jax.tree.flatten(args, is_leaf=lambda x: isinstance(x, np.ndarray) and x.dtype == object)
        if tree != self.in_tree:
            raise TypeError(f"{self.name} was traced for arguments {self.in_tree}, got {tree}.")
        traced = list(traced)
        if len(traced) != len(self.traced_consts):
            raise ValueError(f"{self.name} needs {len(self.traced_consts)} traced constants, got {len(traced)}.")
        consts = [_const(traced.pop(0)) if isinstance(c, jax.core.Tracer) else _const(c) for c in self.consts]
        outs = _eval(self.jaxpr, consts, [_leaf(x) for x in leaves])
        return jax.tree.unflatten(self.out_tree, outs)
