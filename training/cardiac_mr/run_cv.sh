#!/bin/sh
# The recipe that produced the CV figures (results/cv_metrics.json): per model ONE leg of
#   EPOCHS (16) epochs of 640 slices, AdamW lr 2e-3 (2 warm-up epochs, cosine to 0 per step),
#   cross-entropy weights (1, 3, 1, 1) (RV cavity x3 from the start: unweighted, background outscored
#   the RV for the first epochs) + (1 - mean soft Dice).
# Folds run one after another, niced, with one thread (the 2 cores are shared). -1 = the all-data model.
# Run from the repository root: sh training/cardiac_mr/run_cv.sh (the 5 folds, then the all-data model); FOLDS="-1" sh ... for one.
# CV and FINAL name the run folders (runs/$CV/foldK, runs/$FINAL): 1.1.0 is cv3/final3 at 16 epochs, 1.2.0 cv4/final4 at 80
# (two lanes side by side: FOLDS="0 2 4" and FOLDS="1 3 -1").
# INIT_CV / INIT_FINAL start each model from the same fold's weights in those run folders (a second leg: fresh
# optimizer, fresh warm-up and cosine at LR; SEED other than 0 so the slices and augmentations differ). 1.3.0:
#   EPOCHS=80 LR=1e-3 SEED=1 INIT_CV=cv4 INIT_FINAL=final4 CV=cv5 FINAL=final5 (160 epochs in all).
PY=${PY:-/work/main/.venv/bin/python}
FOLDS=${FOLDS:-"0 1 2 3 4 -1"}
EPOCHS=${EPOCHS:-16}
CV=${CV:-cv3}
FINAL=${FINAL:-final3}
LR=${LR:-2e-3}
SEED=${SEED:-0}
R=training/cardiac_mr/runs
for f in $FOLDS; do
  name=$([ "$f" = -1 ] && echo $FINAL || echo $CV/fold$f)
  init=$([ "$f" = -1 ] && echo "${INIT_FINAL:-}" || echo "${INIT_CV:+$INIT_CV/fold$f}")
  mkdir -p $R/$name
  nice -n 10 $PY training/cardiac_mr/cmr_train.py --fold $f --epochs $EPOCHS --lr $LR --seed $SEED --threads 1 \
    --ce-class-weights 1,3,1,1 ${init:+--resume $R/$init/last.pt} --out $R/$name > $R/$name/train.log 2>&1 || exit 1
done
