#!/bin/bash
# SPOS learning rate on the v2 task: 400 epochs (about 2 CPU min), seeds 0-1, lr 0.025 vs 0.1
cd /work/main
for seed in 0 1; do for lr in 0.025 0.1; do
  wd=runs/spos_lr/lr${lr}_s${seed}
  taskset -c 1 .venv/bin/python -m jnas search --config experiments/nb201_table_search.py --workdir $wd \
    --config.search.strategy=spos --config.search.epochs=400 --config.seed=$seed \
    --config.data.name=mnist1d_40k_noisy --config.search.w_lr=$lr > $wd.log 2>&1 || echo fail $wd
  .venv/bin/python -m jnas bench $wd --table benchmarks/results/nb201_mnist1d_v2/table.csv --json --no-yardsticks > $wd.bench.json 2>>$wd.log
  echo $wd $(python3 -c "import json;d=json.load(open('$wd.bench.json'));c=d['correlation']['shared_weights'];print(c['kendall_tau'], d.get('test_acc'))")
done; done
