#!/bin/bash
# Cold compile of the paper-size GDAS and DARTS steps, jax 0.10.2 (Python 3.11, ./.venv) against
# jax 0.12.1 (Python 3.12, a clone in /tmp/j312 with its own .venv: pyenv's 3.12.1,
# `python -m venv .venv && .venv/bin/pip install -e '.[test]'`), back to back on core 1.
# Writes NAME_{311,312}.json (search_step.py) and .time (user, system, wall seconds) here.
OUT=$(cd "$(dirname "$0")" && pwd); MAIN=$(cd "$OUT/../../../.." && pwd)
cd "$OUT"
for s in gdas darts; do
  for v in 311 312; do
    if [ $v = 311 ]; then d=$MAIN; else d=/tmp/j312; fi
    ( cd $d && /usr/bin/time -f "%U %S %e" -o $OUT/${s}_${v}.time taskset -c 1 $d/.venv/bin/python benchmarks/search_step.py --strategy $s --batch 32 --compile-only --json ) > $OUT/${s}_${v}.json 2>$OUT/${s}_${v}.err
    echo "$(date +%T) $s $v $(cat $OUT/${s}_${v}.time)"
  done
done
