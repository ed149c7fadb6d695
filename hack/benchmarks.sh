#!/usr/bin/env bash
# The benchmark suite: decision quality on every scenario (faster-than-real-time simulation),
# reaction time in the real closed loop, and scale on a real kube-apiserver.  Prints figures and
# writes them, with PNG plots, to docs/benchmarks/ (or the folder given as the first argument).
# About 25 minutes on 2 cores, plus the one-time setup.  Benchmarks print figures; the structural
# scale properties (flat query count, zero no-op writes) also set the exit code.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
OUT=${1:-docs/benchmarks}
mkdir -p "$OUT"
t0=$(date +%s)
step 1/6 "python environment"
hack/setup-python.sh
step 2/6 "test world binaries (built once, cached)"
hack/setup-testbed.sh
step 3/6 "emulator calibration against the published figures (seconds)"
"$PY" benchmarks/calibration.py | tee "$OUT/calibration.txt"
step 4/6 "decision quality: 7 scenarios x 5 strategies, simulated (about 8 minutes)"
"$VENV/bin/specops" simulate --out "$OUT"
step 5/6 "reaction time in the real closed loop: 3 interval/window settings (about 8 minutes)"
"$PY" benchmarks/reaction.py --out "$OUT" --run-dir .local/reaction
step 6/6 "scale: 10, 100, 1000 resources on a real kube-apiserver (about 15 minutes)"
"$PY" benchmarks/scale.py --sizes 10,100,1000 --out "$OUT"
echo "benchmark suite finished in $(( $(date +%s) - t0 )) s; figures in $OUT/"
