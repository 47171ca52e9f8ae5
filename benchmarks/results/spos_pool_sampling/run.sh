#!/bin/bash
# SPOS's paths drawn per encoding (uniform) or per function (unique, de-isomorphic) on the v2 task:
# 400 epochs (about 2 CPU min of supernet training), learning rate 0.1, seeds 0-1, back to back;
# Kendall tau of the shared weights on 200 cells of the v2 table. Run from the repository root.
set -u
out=runs/spos_pool_sampling
mkdir -p $out
for seed in 0 1; do for sampling in uniform unique; do
  wd=$out/${sampling}_s${seed}
  taskset -c 1 .venv/bin/python -m jnas search --config experiments/nb201_table_search.py --workdir $wd \
    --config.search.strategy=spos --config.search.epochs=400 --config.seed=$seed \
    --config.data.name=mnist1d_40k_noisy --config.search.w_lr=0.1 \
    --config.search.pool_sampling=$sampling > $wd.log 2>&1 || echo fail $wd
  .venv/bin/python -m jnas bench $wd --table benchmarks/results/nb201_mnist1d_v2/table.csv --json \
    --no-yardsticks > benchmarks/results/spos_pool_sampling/${sampling}_s${seed}.bench.json 2>>$wd.log
  echo $wd $(python3 -c "import json;d=json.load(open('benchmarks/results/spos_pool_sampling/${sampling}_s${seed}.bench.json'));c=d['correlation']['shared_weights'];print(c['kendall_tau'], d.get('test_acc'), d.get('rank'))")
done; done
