#!/bin/bash
# run.sh's unique sampling at the CPU time of uniform sampling's 400 epochs: a unique path costs
# about 12 % more per epoch (run.sh, seed 0: 148 against 132 CPU s for 400 epochs), so 356 epochs.
set -u
out=runs/spos_pool_sampling
for seed in 0 1; do
  wd=$out/unique356_s${seed}
  taskset -c 1 .venv/bin/python -m jnas search --config experiments/nb201_table_search.py --workdir $wd \
    --config.search.strategy=spos --config.search.epochs=356 --config.seed=$seed \
    --config.data.name=mnist1d_40k_noisy --config.search.w_lr=0.1 \
    --config.search.pool_sampling=unique > $wd.log 2>&1 || echo fail $wd
  .venv/bin/python -m jnas bench $wd --table benchmarks/results/nb201_mnist1d_v2/table.csv --json \
    --no-yardsticks > benchmarks/results/spos_pool_sampling/unique356_s${seed}.bench.json 2>>$wd.log
  echo $wd $(python3 -c "import json;d=json.load(open('benchmarks/results/spos_pool_sampling/unique356_s${seed}.bench.json'));c=d['correlation']['shared_weights'];print(c['kendall_tau'], d.get('test_acc'), d.get('rank'))")
done
