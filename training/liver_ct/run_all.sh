#!/bin/bash
# The exact commands that produced the committed model (runs/final) and the cross-validation folds: one training
# process at a time, niced, one thread, on the shared 2-core machine.  Every run is one plain schedule: 1500 steps,
# 5 % warm-up, cosine to 0, seed 0.  Folds 0 and 1 and the final model were trained in one session (load average
# 3-9 from other work, 0.5-2 s a step); folds 2, 3 and 4 in a later one (beside one other one-thread training,
# ~0.45 s a step).  Each fold's held-out figures are copied to results/cv_folds/ (committed), which
# cv_summary.py reads: the run folders are git-ignored and do not outlive the machine.
set -e
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd)"
PY=${PY:-python}
STEPS=${STEPS:-1500}
RUNS=${RUNS:-runs}
run() {  # run <fold> <out> <threads>
    mkdir -p "$2"
    nice -n 10 $PY train.py --fold "$1" --steps "$STEPS" --seed 0 --threads "$3" --out "$2" > "$2/train.log" 2>&1
    if [ "$1" -ge 0 ]; then mkdir -p results/cv_folds && cp "$2/fold_metrics.json" "results/cv_folds/fold$1.json"; fi
}
FOLDS=${FOLDS:-"0 -1 1 2 3 4"}
for f in $FOLDS; do
    if [ "$f" = -1 ]; then run -1 "$RUNS/final" 1; else run "$f" "$RUNS/cv/fold$f" 1; fi
done
[ "${TRAIN_ONLY:-0}" = 1 ] && exit 0
$PY export.py           # ONNX into models/liver_spleen_ct_seg/ (evaluate_ircad runs it through LiverCT)
$PY evaluate_ircad.py   # results/ircad.json
$PY cv_summary.py       # results/cv_metrics.json
$PY export.py           # the same ONNX bytes again, now with the metrics in manifest.json
