#!/bin/sh
# The recipe that produced the shipped model and the CV figures: two sequential queues of one thread each,
# niced, the all-data model first. Run from the repository root.
EPOCHS=${EPOCHS:-6}
PY=${PY:-/work/main/.venv/bin/python}
for queue in "-1 1 3" "0 2 4"; do
  ( for f in $queue; do
      out=training/cardiac_mr/runs/$([ "$f" = -1 ] && echo final || echo cv/fold$f); mkdir -p $out
      nice -n 5 $PY training/cardiac_mr/cmr_train.py --fold $f --epochs $EPOCHS --seed 0 --threads 1 --out $out > $out/train.log 2>&1
    done ) &
done
wait
