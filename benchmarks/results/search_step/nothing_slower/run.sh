#!/bin/bash
# Issue 31 item 5: the paper-size first-order DARTS, GDAS and SPOS steps (batch 32, C=16, 8 cells,
# 32x32x3) at the commit the issue was filed at (8108149) and at HEAD, back to back, twice, each
# pinned to core 1: benchmarks/search_step.py of each commit, its own jnas first on the path.
# Run from the repository root: bash benchmarks/results/search_step/nothing_slower/run.sh
set -u
ROOT=$(pwd); OUT=$ROOT/benchmarks/results/search_step/nothing_slower; BASE=${BASE:-8108149}
git worktree add -f /tmp/jnas_base "$BASE" -q 2>/dev/null || true
for rep in 1 2; do
  for s in darts gdas spos; do
    for side in base head; do
      if [ $side = base ]; then src=/tmp/jnas_base; else src=$ROOT; fi
      (cd $src && PYTHONPATH=$src taskset -c 1 "$ROOT/.venv/bin/python" benchmarks/search_step.py \
          --strategy $s --batch 32 --steps 5 --json) > "$OUT/${s}_${side}_${rep}.json"
      echo "$(date +%T) $s $side $rep rc=$?"
    done
  done
done
