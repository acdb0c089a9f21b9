#!/bin/bash
# The exact commands that produced a committed model version and its cross-validation folds: one training process
# per core, niced, one thread, on the shared 2-core machine.  Every run is one plain schedule: STEPS steps, 5 % warm-up,
# cosine to 0, seed 0.  Each fold's held-out figures are copied to $RESULTS/cv_folds/ (committed), which cv_summary.py
# reads: the run folders are git-ignored and do not outlive the machine.
#
#   0.1.0 (models/liver_spleen_ct_seg/):    bash run_all.sh                       (1500 steps, runs/, results/)
#   0.2.0 (models/liver_spleen_ct_seg_v2/): VERSION=0.2.0 STEPS=3000 bash run_all.sh   (runs/v2/, results/v2/)
#   0.3.0 (models/liver_spleen_ct_seg_v3/): VERSION=0.3.0 STEPS=3000 LR=1e-3 SEED=1 INIT_RUNS=runs/v2 bash run_all.sh
#          (each run starts from the same fold's 0.2.0 weights: a warm restart, 6000 steps in all; runs/v3/, results/v3/)
#
# 0.1.0: folds 0 and 1 and the final model were trained in one session (load average 3-9 from other work, 0.5-2 s a
# step); folds 2, 3 and 4 in a later one beside one other one-thread training (~0.45 s a step).  0.2.0: two lanes,
# FOLDS="0 2 4" and FOLDS="-1 1 3", side by side with TRAIN_ONLY=1 (0.3-0.7 s a step), then this script's last four
# commands.
set -e
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd)"
PY=${PY:-python}
VERSION=${VERSION:-0.1.0}
STEPS=${STEPS:-1500}
LR=${LR:-2e-3}
SEED=${SEED:-0}
if [ "$VERSION" = 0.1.0 ]; then suffix=""; else suffix="/v$(echo "$VERSION" | cut -d. -f2)"; fi
RUNS=${RUNS:-runs$suffix}
RESULTS=${RESULTS:-results$suffix}
run() {  # run <fold> <out> <threads> [<run folder to start from>]
    mkdir -p "$2"
    init=()
    if [ -n "${4:-}" ]; then init=(--init-from "$4/last.pt"); fi
    nice -n 10 $PY train.py --fold "$1" --steps "$STEPS" --lr "$LR" --seed "$SEED" --threads "$3" --out "$2" "${init[@]}" \
        > "$2/train.log" 2>&1
    if [ "$1" -ge 0 ]; then mkdir -p "$RESULTS/cv_folds" && cp "$2/fold_metrics.json" "$RESULTS/cv_folds/fold$1.json"; fi
}
FOLDS=${FOLDS:-"0 -1 1 2 3 4"}
for f in $FOLDS; do
    if [ "$f" = -1 ]; then sub=final; else sub="cv/fold$f"; fi
    run "$f" "$RUNS/$sub" 1 ${INIT_RUNS:+"$INIT_RUNS/$sub"}
done
[ "${TRAIN_ONLY:-0}" = 1 ] && exit 0
export_model() { $PY export.py --version "$VERSION" --checkpoint "$RUNS/final/last.pt" --results "$RESULTS"; }
export_model                                            # ONNX into models/ (evaluate_ircad runs the newest through LiverCT)
$PY evaluate_ircad.py --results "$RESULTS"              # $RESULTS/ircad.json
$PY cv_summary.py --results "$RESULTS"                  # $RESULTS/cv_metrics.json
export_model                                            # the same ONNX bytes again, now with the metrics in manifest.json
