"""REINFORCE, PNAS (and DPP-Net) vs random search on MNIST-1D with a train-from-scratch scorer.

Run (slow: every architecture is trained; minutes per strategy on a 2-core CPU):
  python benchmarks/strategies_mnist1d.py --archs 64 --retrain-epochs 8 --json
  python benchmarks/strategies_mnist1d.py --archs 12 --dpp-out runs/dpp_mnist1d

Each strategy gets the same number of trained architectures of a small DARTS
space (2 nodes per cell, 4 ops) and the same scorer (a few epochs from scratch,
validation split carved from the training set). It prints the best validation
accuracy each strategy found and then the test accuracy of that architecture
(the test set is read only here, after the search). ``--scorer path`` (the
default) trains each architecture as its path through the search network with
one compiled program for all of them (about 3 s per architecture here);
``--scorer discrete`` builds and compiles each discrete network (about 15 s).
``--retrain-epochs N`` then retrains every strategy's best architecture as the
discrete network for N epochs and reports that test accuracy too, so the
strategies are also compared on the network a user would train. With ``--dpp-out`` it also
runs DPP-Net over (accuracy, latency measured on this machine) and writes the
Pareto front as JSON and PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jnas.estimation.scratch import PathScratchScorer, ScratchScorer  # noqa: E402
from jnas.spaces.darts import DartsSpace  # noqa: E402
from jnas.strategies.progressive import dpp_net, measured_front, pnas  # noqa: E402
from jnas.strategies.reinforce import reinforce  # noqa: E402

OPS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")
log = logging.getLogger("strategies_mnist1d")


class LinearCost:
  """A latency lookup table learned from measurements: one entry per (decision, value).

  Fitted by ridge regression on the latencies measured so far; predicts 0
  before the first measurement.
  """

  def __init__(self, sizes):
    self.sizes = tuple(sizes)
    self.w = None

  def features(self, x):
    x = np.asarray(x)
    return np.concatenate([np.eye(s)[x[:, i]] for i, s in enumerate(self.sizes)] +
                          [np.ones((len(x), 1))], axis=1)

  def fit(self, x, y):
    f = self.features(x)
    self.w = np.linalg.solve(f.T @ f + 1e-2 * np.eye(f.shape[1]), f.T @ np.asarray(y))

  def __call__(self, x):
    return np.zeros(len(x)) if self.w is None else self.features(x) @ self.w


def run_strategy(name, strategy, space, scorer, n, key, *, with_latency=False, on_tell=None):
  """Ask/tell until ``n`` architectures were scored; returns (history, state)."""
  state = strategy.init(key)
  ask = jax.jit(strategy.ask) if name == "reinforce" else strategy.ask
  tell = jax.jit(strategy.tell) if name == "reinforce" else strategy.tell
  history = []
  while len(history) < n:
    state, asked = ask(state)
    asked = np.asarray(asked)[: n - len(history)]
    if len(asked) == 0:
      break
    rows = []
    for idx in asked:
      g = space.decode_indices(idx)
      r = scorer.evaluate(g)
      history.append({"genotype": g, "val_accuracy": r["val_accuracy"],
                      "latency_ms": r.get("latency_ms"), "num_params": r["num_params"]})
      rows.append([r["val_accuracy"], r["latency_ms"]] if with_latency else r["val_accuracy"])
      log.info("%s %d/%d: val %.4f (%.1f s)", name, len(history), n, r["val_accuracy"],
               r["train_seconds"])
    state = tell(state, asked, np.asarray(rows, np.float32))
    if on_tell is not None:
      on_tell(state)
  return history, state


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--archs", type=int, default=12, help="trained architectures per strategy")
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--channels", type=int, default=8)
  p.add_argument("--layers", type=int, default=3)
  p.add_argument("--nodes", type=int, default=2)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--strategies", default="random,reinforce,pnas")
  p.add_argument("--dpp-out", default=None, help="also run DPP-Net; write its front here")
  p.add_argument("--scorer", choices=("path", "discrete"), default="path",
                 help="path: one compiled search-network path for all archs; discrete: "
                      "each discrete network compiled and trained")
  p.add_argument("--retrain-epochs", type=int, default=0,
                 help="retrain each strategy's best as the discrete network (0: skip)")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

  space = DartsSpace(num_nodes=args.nodes, primitives=OPS)
  train_kw = dict(channels=args.channels, layers=args.layers, seed=args.seed)
  if args.scorer == "path":
    scorer = PathScratchScorer("mnist1d", space=space, epochs=args.epochs, **train_kw)
  else:
    scorer = ScratchScorer("mnist1d", epochs=args.epochs, latency_batch=256, **train_kw)
  retrainer = (ScratchScorer("mnist1d", epochs=args.retrain_epochs, **train_kw)
               if args.retrain_epochs > 0 else None)
  key = jax.random.key(args.seed)
  out = {"space": {"nodes": args.nodes, "ops": list(OPS)}, "archs": args.archs,
         "epochs": args.epochs, "channels": args.channels, "layers": args.layers,
         "seed": args.seed, "scorer": args.scorer, "retrain_epochs": args.retrain_epochs,
         "strategies": {}}
  t_all = time.time()
  for name in [s for s in args.strategies.split(",") if s]:
    t0 = time.time()
    k = jax.random.fold_in(key, len(out["strategies"]))
    if name == "random":
      rng = np.random.default_rng(args.seed)
      history = []
      for _ in range(args.archs):
        g = space.random_genotype(rng)
        r = scorer.evaluate(g)
        history.append({"genotype": g, "val_accuracy": r["val_accuracy"]})
        log.info("random %d/%d: val %.4f", len(history), args.archs, r["val_accuracy"])
    elif name == "reinforce":
      history, _ = run_strategy(name, reinforce(space, batch_size=2, learning_rate=0.05), space,
                                scorer, args.archs, k)
    elif name == "pnas":
      history, _ = run_strategy(name, pnas(space, beam_size=3), space, scorer, args.archs, k)
    else:
      raise SystemExit(f"unknown strategy {name!r}")
    best = max(history, key=lambda h: h["val_accuracy"])
    out["strategies"][name] = {
        "best_val_accuracy": best["val_accuracy"],
        "test_accuracy": scorer.test_accuracy(best["genotype"]),
        "median_val_accuracy": float(np.median([h["val_accuracy"] for h in history])),
        "trained": len(history),
        "best_genotype": space.genotype_to_json(best["genotype"]),
        "seconds": round(time.time() - t0, 1),
    }
    if retrainer is not None:
      r = retrainer.evaluate(best["genotype"])
      out["strategies"][name].update(
          retrained_val_accuracy=r["val_accuracy"],
          retrained_test_accuracy=retrainer.test_accuracy(best["genotype"]))
  if args.dpp_out:
    t0 = time.time()
    cost = LinearCost(space.index_sizes())
    strategy = dpp_net(space, cost, beam_size=3)
    refit = lambda st: cost.fit(st.measured_x, st.measured_cost[:, 0])
    # DPP-Net's cost is the discrete network's latency, which only ScratchScorer measures.
    dpp_scorer = (scorer if args.scorer == "discrete" else
                  ScratchScorer("mnist1d", epochs=args.epochs, latency_batch=256, **train_kw))
    history, state = run_strategy("dpp", strategy, space, dpp_scorer, args.archs,
                                  jax.random.fold_in(key, 99), with_latency=True, on_tell=refit)
    front = measured_front(state)
    points = [{"arch": json.dumps(space.genotype_to_json(space.decode_indices(x))),
               "val_accuracy": float(a), "latency_ms": float(c[0])}
              for x, a, c in zip(front["x"], front["score"], front["cost"])]
    on_front = [pt for pt, m in zip(points, front["mask"]) if m]
    Path(args.dpp_out).mkdir(parents=True, exist_ok=True)
    from jnas.estimation.pareto import plot_pareto, save_pareto_json
    objectives = [("val_accuracy", "max"), ("latency_ms", "min")]
    save_pareto_json(str(Path(args.dpp_out) / "pareto.json"), on_front, objectives,
                     evaluated=points)
    plot_pareto(str(Path(args.dpp_out) / "pareto.png"), points, on_front, objectives)
    out["dpp"] = {"front": on_front, "evaluated": len(points), "dir": args.dpp_out,
                  "seconds": round(time.time() - t0, 1)}
  out["seconds"] = round(time.time() - t_all, 1)
  out["trained_total"] = scorer.trained + (retrainer.trained if retrainer else 0)
  if args.json:
    print(json.dumps(out, indent=2))
  else:
    for name, r in out["strategies"].items():
      retrained = (f"  retrained test {r['retrained_test_accuracy']:.4f}"
                   if "retrained_test_accuracy" in r else "")
      print(f"{name:10s} best val {r['best_val_accuracy']:.4f}  test {r['test_accuracy']:.4f}  "
            f"median val {r['median_val_accuracy']:.4f}{retrained}  ({r['trained']} archs, "
            f"{r['seconds']} s)")
    if "dpp" in out:
      print(f"dpp front: {len(out['dpp']['front'])} of {out['dpp']['evaluated']} -> "
            f"{args.dpp_out}/pareto.json, pareto.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
