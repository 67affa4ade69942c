"""The training loop: dispatches of the scanned step, the validation loss every
`eval_every` steps, early stopping, the callback, the time limit and checkpoints."""

import dataclasses
import math
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from . import _step
from ._checkpoint import check_finite, save_checkpoint
from ._parallel import copy, local


@dataclasses.dataclass
class State:
    """A run's state between dispatches: what a checkpoint holds."""

    params: object
    opt_state: object
    best: object
    step: int = 0
    best_val: float = math.inf
    bad_evals: int = 0
    stopped: bool = False  # a resumed run that had stopped stays stopped
    history: dict = dataclasses.field(
        default_factory=lambda: {"step": [], "loss": [], "val_step": [], "val_loss": [], "samples_per_s": []}
    )


class TimeLimit:
    """A wall-clock budget of `seconds` from `start` (`None`: none). After two
    dispatches (the first may include compilation) it measures the throughput and
    sets the run's length to the steps that fit in what is left, evaluations
    included; `due` says when the budget is spent."""

    def __init__(self, seconds, start: float, validation_batches: int, eval_every: int):
        self.deadline = None if seconds is None else start + seconds
        self.eval_share = validation_batches / eval_every  # a validation batch costs about a step
        self.marks = []

    def due(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def length(self, step: int, steps: int, steps_per_call: int) -> int | None:
        """The run's new length once the throughput is known (at the second dispatch),
        else `None`."""
        if self.deadline is None or len(self.marks) > 2:
            return None
        self.marks.append(time.perf_counter())
        if len(self.marks) < 2:
            return None
        rate = steps_per_call / (self.marks[1] - self.marks[0])
        more = int((self.deadline - self.marks[1]) * rate / (1 + self.eval_share)) // steps_per_call * steps_per_call
        self.marks.append(None)  # measured once
        return max(step, min(steps, step + more))


def _validation(consts, state: State, source, steps_per_call: int) -> float:
    state.params, state.opt_state, stats = _step.measure(
        consts, state.params, state.opt_state, source.validation, source.validation_batches, steps_per_call
    )
    return _step.validation_loss(stats)


def _evaluate(state: State, v: float, rate: float, patience, callback) -> None:
    """Record the validation loss `v`, keep the best parameters, and stop on patience
    or when the callback says so."""
    h = state.history
    h["val_step"].append(state.step)
    h["val_loss"].append(v)
    h["samples_per_s"].append(None if math.isnan(rate) else rate)
    if v < state.best_val:
        state.best_val, state.bad_evals, state.best = v, 0, copy(state.params)
    else:
        state.bad_evals += 1
        state.stopped = patience is not None and state.bad_evals >= patience
    if callback is not None:
        info = {"step": state.step, "loss": h["loss"][-1], "val_loss": v, "samples_per_s": rate}
        answer = callback(state.step, info)
        if answer is True or (isinstance(answer, str) and answer == "stop"):
            state.stopped = True


def run(state: State, consts, source, plan, *, batch_size, patience, callback, limit: TimeLimit, timed: bool,
        checkpoints, progress: bool, optimiser_given: bool) -> State:  # fmt: skip
    """Train from `state` until `plan.steps`, patience, the callback or the time limit
    stops it. `checkpoints`: `(directory, config)`, directory `None` for none."""
    from tqdm.auto import tqdm

    directory, config = checkpoints
    steps, per_call = plan.steps, plan.steps_per_call
    bar = tqdm(total=steps, initial=state.step, disable=not progress, unit="step", dynamic_ncols=True)
    window_start, window_samples, first_call, rate = time.perf_counter(), 0, state.step // per_call, math.nan
    pool = ThreadPoolExecutor(1, thread_name_prefix="sgjax-rows")  # the next dispatch's inputs, read meanwhile
    upcoming = pool.submit(source.train, state.step // per_call)
    try:
        while state.step < steps and not state.stopped:
            call = state.step // per_call
            xs, upcoming = upcoming.result(), pool.submit(source.train, call + 1)
            state.params, state.opt_state, losses, stats = _step.train_call(
                (consts, _step.mode(per_call)), state.params, state.opt_state, xs
            )
            host_losses, finite = jax.device_get(local((losses, stats["finite"])))
            check_finite(host_losses, finite, state.step, directory, optimiser_given)
            state.step += per_call
            window_samples += per_call * batch_size
            state.history["step"].append(state.step)
            state.history["loss"].append(float(np.mean(losses)))
            if call == first_call:  # the first dispatch includes compilation: not counted in samples/s
                window_start, window_samples = time.perf_counter(), 0
            if (length := limit.length(state.step, steps, per_call)) is not None:
                steps = bar.total = length
                if timed:
                    state.opt_state = _step.with_total(state.opt_state, min(steps, 2**31 - 1))
            out_of_time = limit.due()
            bar.update(per_call)
            bar.set_postfix(
                loss=f"{state.history['loss'][-1]:.4g}", val=f"{state.best_val:.4g}", samples_s=f"{rate:,.0f}"
            )
            if state.step % plan.eval_every == 0 or state.step >= steps or out_of_time:
                v = _validation(consts, state, source, per_call)
                if window_samples:
                    rate = window_samples / (time.perf_counter() - window_start)
                _evaluate(state, v, rate, patience, callback)
                window_start, window_samples = time.perf_counter(), 0
            state.stopped = state.stopped or out_of_time
            due = directory is not None and (
                state.step % plan.checkpoint_every == 0 or state.step >= steps or state.stopped
            )
            if due and jax.process_index() == 0:  # one writer when several processes train together
                save_checkpoint(
                    directory, state.step, _step.assemble(consts[1], local(state.params)), local(state.opt_state),
                    local(state.best), state.best_val, state.bad_evals, state.history, config, state.stopped,
                )  # fmt: skip
    finally:
        bar.close()
        pool.shutdown(wait=False, cancel_futures=True)
    return state
