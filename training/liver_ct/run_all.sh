#!/bin/bash
# The exact commands that produced the committed model (runs/final) and the cross-validation folds, as they were
# run here: one process at a time, one thread, niced, on the shared 2-core machine (load average 3-8 from other
# work, so a step took 0.5-1.1 s).  Every run is one plain schedule: 1500 steps, 5 % warm-up, cosine to 0, seed 0.
# Folds are run in this order until the session's CPU ran out; results/cv_metrics.json lists the folds actually
# run (`folds_done`); a missing fold is the same command with its --fold number.
set -e
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd)"
PY=${PY:-python}
run() {  # run <fold> <out>
    mkdir -p "$2"
    nice -n 10 $PY train.py --fold "$1" --steps 1500 --seed 0 --threads 1 --out "$2" > "$2/train.log" 2>&1
}
run 0 runs/cv/fold0
run -1 runs/final
for f in ${FOLDS:-1 2 3 4}; do
    run "$f" "runs/cv/fold$f"
done
$PY export.py           # ONNX into models/liver_spleen_ct_seg/ (evaluate_ircad runs it through LiverCT)
$PY evaluate_ircad.py   # results/ircad.json
$PY cv_summary.py       # results/cv_metrics.json
$PY export.py           # the same ONNX bytes again, now with the metrics in manifest.json
