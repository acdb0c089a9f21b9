#!/bin/bash
# The exact recipe of the committed model and its cross-validation fold, as they were run here (one thread each,
# niced, two processes side by side on the shared 2-core machine).  The shared cores were saturated by other
# work (load average 16-22), so each run was stopped at a checkpoint and finished with --resume, annealing the
# learning rate to 0 over a shorter total; that is why the step counts are odd.
#   shipped model : phase 1 = first 325 steps of a 1006-step schedule (seed 0); phase 2 = --resume to 500 steps (seed 1)
#   CV fold 0     : phase 1 = first 200 steps of a 600-step schedule (seed 0);  phase 2 = --resume to 400 steps (seed 1)
#   CV folds 1-4  : not run in this session (no CPU left); the same two commands with --fold 1..4 run them.
set -e
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd)"
PY=${PY:-python}
mkdir -p runs/final runs/cv/fold0
nice -n 5 $PY train.py --fold -1 --steps 1006 --stop-at 325 --seed 0 --threads 1 --out runs/final > runs/final/phase1.log 2>&1
cp runs/final/last.pt runs/final/phase1_step325.pt
nice -n 5 $PY train.py --fold -1 --steps 500 --resume runs/final/phase1_step325.pt --seed 1 --threads 1 --out runs/final > runs/final/train.log 2>&1
nice -n 5 $PY train.py --fold 0 --steps 600 --stop-at 200 --seed 0 --threads 1 --out runs/cv/fold0 > runs/cv/fold0/phase1.log 2>&1
cp runs/cv/fold0/last.pt runs/cv/fold0/phase1_step200.pt
nice -n 5 $PY train.py --fold 0 --steps 400 --resume runs/cv/fold0/phase1_step200.pt --seed 1 --threads 1 --out runs/cv/fold0 > runs/cv/fold0/train.log 2>&1
