#!/bin/bash
# The exact commands that produced the committed model (runs/final) and the cross-validation folds, in the order
# they were run here: one training process at a time, niced, on the shared 2-core machine (load average 3-9 from
# other work, so a step took 0.5-2 s).  Every run is one plain schedule: 1500 steps, 5 % warm-up, cosine to 0,
# seed 0, one thread.  Folds 2, 3 and 4 were not run in this session (no CPU time left; a fold-2 start was
# stopped at step 50): results/cv_metrics.json lists the folds actually run (`folds_done`);
# `run 2 runs/cv/fold2 1` (etc.) runs a missing one.
set -e
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd)"
PY=${PY:-python}
run() {  # run <fold> <out> <threads>
    mkdir -p "$2"
    nice -n 10 $PY train.py --fold "$1" --steps 1500 --seed 0 --threads "$3" --out "$2" > "$2/train.log" 2>&1
}
run 0 runs/cv/fold0 1
run -1 runs/final 1
run 1 runs/cv/fold1 1
$PY export.py           # ONNX into models/liver_spleen_ct_seg/ (evaluate_ircad runs it through LiverCT)
$PY evaluate_ircad.py   # results/ircad.json
$PY cv_summary.py       # results/cv_metrics.json
$PY export.py           # the same ONNX bytes again, now with the metrics in manifest.json
