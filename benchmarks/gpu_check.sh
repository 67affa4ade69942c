#!/usr/bin/env bash
# Every GPU check of sgjax in one run, for a machine with a CUDA build of JAX (the
# workplace's device tool: `run` with command `bash benchmarks/gpu_check.sh` and
# timeout_s 600; nothing is installed there, sgjax runs from the tree). ~8 minutes on an
# H100/H200; `QUICK=1` for a smoke run (also on a CPU, to check this script).
#
# Steps, one after another, each under its own time limit; a failing step does not stop
# the others, and the summary at the end gives each one's exit status and seconds:
#   devices  — jax's version and devices;
#   tests    — the fused kernel, simulation and training tests, on the GPU;
#   fused    — benchmarks/bench_fused.py: the Pallas kernel against jit(vmap(diffeqsolve))
#              (issue 6: SIR ≥ 1e8 trajectories/s, Lorenz 2^23 × 1,000 steps ≤ 145 ms, ≥ 20×);
#   train    — benchmarks/bench_train.py at batches 512, 8,192 and 65,536 (issue 3: fused
#              training ≥ 5,000,000 samples/s on an H100);
#   simulate — benchmarks/bench_simulate.py (shared-step and per-trajectory throughput).
# Everything lands in $OUT (default ./gpu-check): one log, the benchmarks' JSON files and
# RESULTS.md with the sections those benchmarks rewrote (copy them into the repository's
# benchmarks/RESULTS.md by hand, under a GPU heading: the CPU figures stay).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
# One process on the GPU at a time, taking memory as it needs it (JAX would otherwise
# take 75% of it up front).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
quick=() && [ "${QUICK:-0}" = 1 ] && quick=(--quick)
log="$OUT/gpu_check.log"
: > "$log"
summary=()

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start rc
    shift 2
    echo "=== $name (at most $limit s): $*" | tee -a "$log"
    start=$(date +%s)
    timeout "$limit" "$@" >> "$log" 2>&1
    rc=$?
    summary+=("$name: exit $rc after $(($(date +%s) - start)) s")
    echo "=== $name: exit $rc" | tee -a "$log"
}

step devices 60 "$PY" -c "import jax, sgjax; print('jax', jax.__version__, jax.default_backend(), jax.devices())"
step tests 200 "$PY" -m pytest -q -x -n 0 -p no:cacheprovider tests/test_fused.py tests/test_simulate.py tests/test_train.py
step fused 180 "$PY" benchmarks/bench_fused.py "${quick[@]}"
if [ "${QUICK:-0}" = 1 ]; then
    step train 120 "$PY" benchmarks/bench_train.py --quick --batch 512
else
    step train 150 "$PY" benchmarks/bench_train.py --batch 512 8192 65536
fi
step simulate 150 "$PY" benchmarks/bench_simulate.py "${quick[@]}"

cp benchmarks/RESULTS.md benchmarks/results_fused.json benchmarks/results_train.json benchmarks/results_simulate.json "$OUT"/ 2>> "$log"
printf '%s\n' "${summary[@]}" | tee -a "$log"
