#!/bin/sh
# The recipe that produced the shipped model and the CV figures, per model two legs:
#   leg 1: 6 epochs of 640 slices, AdamW lr 2e-3, plain cross-entropy + soft Dice;
#   leg 2: from leg 1's weights, 5 epochs of 640 slices, lr 1e-3, cross-entropy weights (1, 3, 1, 1)
#          (the RV cavity was still never predicted after leg 1: background outscored it).
# Each fold runs niced with one thread; FOLDS lists the queues run in parallel (-1 = the all-data model).
# Run from the repository root: sh training/cardiac_mr/run_cv.sh ; FOLDS="1 2" sh training/cardiac_mr/run_cv.sh
PY=${PY:-/work/main/.venv/bin/python}
FOLDS=${FOLDS:-"-1 0"}
R=training/cardiac_mr/runs
for f in $FOLDS; do
  ( name=$([ "$f" = -1 ] && echo final || echo cv/fold$f); name2=$([ "$f" = -1 ] && echo final2 || echo cv2/fold$f)
    mkdir -p $R/$name $R/$name2
    nice -n 5 $PY training/cardiac_mr/cmr_train.py --fold $f --epochs 6 --seed 0 --threads 1 --out $R/$name > $R/$name/train.log 2>&1 &&
    nice -n 5 $PY training/cardiac_mr/cmr_train.py --fold $f --epochs 5 --seed 1 --threads 1 --resume $R/$name/last.pt --lr 1e-3 \
      --ce-class-weights 1,3,1,1 --out $R/$name2 > $R/$name2/train.log 2>&1 ) &
done
wait
