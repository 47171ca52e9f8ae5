"""Measuring: a table op by op, whole networks end to end, and how well one predicts the other."""

from __future__ import annotations

import datetime
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx

from jnas.estimation.latency.predict import predicted_latency
from jnas.estimation.latency.table import LatencyTable, _positions_json, check_table
from jnas.estimation.latency.timing import (_check_clock, _check_dtype, _dispatch_call,
                                            _forward_call, device_description, time_calls)
from jnas.spaces.chain import ChainGenotype, ChainSpace


def build_latency_table(space: ChainSpace, batch_size: int = 1, dtype: str = "float32",
                        repeats: int = 20, *, warmup: int = 3, seed: int = 0,
                        stat: str = "median", clock: str = "wall",
                        progress: Callable[[str], None] | None = None) -> LatencyTable:
  """Times every candidate at every block of ``space`` on the current backend.

  Args:
    space: a chain space.
    batch_size: examples per call (latency at batch 1 and throughput-bound
      batch 256 rank architectures differently).
    dtype: ``float32``, ``bfloat16`` or ``float16`` for weights and activations.
    repeats: timed repeats per op (the median is kept).
    warmup: untimed calls after compilation.
    seed: weight and input initialisation.
    stat: ``median`` (default) or ``min`` over the timed calls.
    clock: ``wall`` (default) or ``cpu`` (see :func:`time_calls`).
    progress: optional callback receiving one line per timed op.

  Returns:
    A :class:`LatencyTable`; ``table.save(path)`` writes it as JSON.

  Example:
    >>> from jnas.spaces.chain import KernelChainSpace
    >>> t = build_latency_table(KernelChainSpace(widths=(4, 4)), repeats=3)  # doctest: +SKIP
    >>> t.ops_ms.shape  # doctest: +SKIP
    (2, 3)
  """
  from jnas.train.chain_network import build_block, build_head, build_stem

  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  dt = _check_dtype(dtype)
  _check_clock(clock)
  positions = space.positions()
  # Compile everything first, then time in interleaved rounds (see time_calls).
  # Blocks with the same shapes and stride share one measurement.
  calls = [_dispatch_call(space.input_shape, batch_size, dt)]
  names = ["dispatch"]
  if build_stem(space, nnx.Rngs(0)) is not None:
    calls.append(_forward_call(lambda r: build_stem(space, r), space.input_shape, batch_size,
                               dt, seed))
    names.append("stem")
  calls.append(_forward_call(lambda r: build_head(space, r), positions[-1].out_shape,
                             batch_size, dt, seed))
  names.append("head")
  slot: dict[tuple, int] = {}
  where = np.zeros((len(positions), len(space.candidates)), np.int64)
  for p in positions:
    for j, cand in enumerate(space.candidates):
      key = (cand, p.in_shape, p.out_shape, p.stride, p.pool)
      if key not in slot:
        slot[key] = len(calls)
        calls.append(_forward_call(lambda r, p=p, cand=cand: build_block(space, p, cand, r),
                                   p.in_shape, batch_size, dt, seed))
        names.append(f"block {p.index} {cand}")
        if progress is not None:
          progress(f"compiled block {p.index} {cand}")
      where[p.index, j] = slot[key]
  secs = np.asarray(time_calls(calls, repeats=repeats, warmup=warmup, stat=stat, clock=clock))
  overhead = float(secs[0])
  net_ms = np.maximum(secs - overhead, 0.0) * 1e3
  if progress is not None:
    for name, t in zip(names, secs):
      progress(f"{name}: {t * 1e3:.4f} ms")
  stem_ms = float(net_ms[names.index("stem")]) if "stem" in names else 0.0
  head_ms = float(net_ms[names.index("head")])
  ops = net_ms[where]
  return LatencyTable(
      space=space.name, fingerprint=space.fingerprint(), space_config=space.config(),
      candidates=tuple(space.candidates), positions=_positions_json(space), ops_ms=ops,
      stem_ms=stem_ms, head_ms=head_ms, overhead_ms=overhead * 1e3, batch_size=batch_size,
      dtype=str(dt), backend=jax.default_backend(), device=device_description(),
      repeats=repeats, warmup=warmup, jax_version=jax.__version__, stat=stat, clock=clock,
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def measure_latencies(space: ChainSpace, genotypes: Sequence[ChainGenotype],
                      batch_size: int = 1, dtype: str = "float32", repeats: int = 20, *,
                      warmup: int = 3, seed: int = 0, stat: str = "median",
                      clock: str = "wall") -> list[float]:
  """Milliseconds per forward pass of each whole compiled network (inference mode).

  All networks are compiled first, then timed in interleaved rounds, so load
  from other processes affects them alike.

  Example:
    >>> measure_latencies(space, [g1, g2], batch_size=1, repeats=5)  # doctest: +SKIP
    [0.41, 0.57]
  """
  from jnas.train.chain_network import ChainNetwork

  dt = _check_dtype(dtype)
  _check_clock(clock)
  for g in genotypes:
    space.validate(g)
  calls = [_forward_call(lambda r, g=g: ChainNetwork(space, g, rngs=r), space.input_shape,
                         batch_size, dt, seed) for g in genotypes]
  secs = time_calls(calls, repeats=repeats, warmup=warmup, stat=stat, clock=clock)
  return [1e3 * t for t in secs]


def measure_latency(space: ChainSpace, genotype: ChainGenotype, batch_size: int = 1,
                    dtype: str = "float32", repeats: int = 20, *, warmup: int = 3,
                    seed: int = 0, stat: str = "median", clock: str = "wall") -> float:
  """Milliseconds per forward pass of the whole compiled network (inference mode).

  Example:
    >>> measure_latency(space, genotype, batch_size=1, repeats=5)  # doctest: +SKIP
    0.41
  """
  return measure_latencies(space, [genotype], batch_size, dtype, repeats, warmup=warmup,
                           seed=seed, stat=stat, clock=clock)[0]


def rank_correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
  """Pearson r, Spearman rho and Kendall tau-b of two samples.

  Example:
    >>> rank_correlations([1, 2, 3], [10, 20, 25])["spearman"]
    1.0
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

  def ranks(a):
    order = np.argsort(a, kind="stable")
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    for v in np.unique(a):  # average ranks of ties
      m = a == v
      r[m] = r[m].mean()
    return r

  def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0

  dx = np.sign(x[:, None] - x[None, :])
  dy = np.sign(y[:, None] - y[None, :])
  iu = np.triu_indices(len(x), 1)
  conc = float((dx * dy)[iu].sum())
  nx, ny = float(np.abs(dx[iu]).sum()), float(np.abs(dy[iu]).sum())
  tau = conc / np.sqrt(nx * ny) if nx > 0 and ny > 0 else 0.0
  return {"pearson": pearson(x, y), "spearman": pearson(ranks(x), ranks(y)),
          "kendall_tau": float(tau)}


def validate_table(space: ChainSpace, table: LatencyTable, num_archs: int = 20, *,
                   seed: int = 0, repeats: int | None = None) -> dict[str, Any]:
  """Predicted vs measured end-to-end latency of ``num_archs`` random architectures.

  Returns the per-architecture numbers, the rank correlations, and the mean
  absolute percentage error of the prediction.

  Example:
    >>> validate_table(space, table, 20)["spearman"]  # doctest: +SKIP
    0.93
  """
  check_table(table, space)
  rng = np.random.default_rng(seed)
  genos = [space.random_genotype(rng) for _ in range(num_archs)]
  reps = repeats or table.repeats or 20
  predicted = [predicted_latency(table, g) for g in genos]
  measured = measure_latencies(space, genos, table.batch_size, table.dtype, reps, seed=seed,
                               stat=table.stat, clock=table.clock)
  pred, meas = np.asarray(predicted), np.asarray(measured)
  out: dict[str, Any] = rank_correlations(pred, meas)
  out["mape"] = float(np.mean(np.abs(pred - meas) / meas))
  out["mean_relative_error"] = float(np.mean((pred - meas) / meas))
  out["architectures"] = [{"blocks": list(g.blocks), "predicted_ms": p, "measured_ms": m}
                          for g, p, m in zip(genos, predicted, measured)]
  return out


def latency_settings(config) -> dict[str, Any]:
  """A config's ``latency`` section with its defaults: how a table for it is measured.

  Keys: ``batch_size``, ``dtype``, ``repeats``, ``statistic``, ``clock``,
  ``cpu_threads``.

  Example:
    >>> latency_settings(load_config("experiments/fbnet_mnist1d.py"))["clock"]  # doctest: +SKIP
    'cpu'
  """
  lc = config.get("latency", {})
  return {"batch_size": int(lc.get("batch_size", 1)), "dtype": str(lc.get("dtype", "float32")),
          "repeats": int(lc.get("repeats", 20)), "statistic": str(lc.get("statistic", "median")),
          "clock": str(lc.get("clock", "wall")), "cpu_threads": int(lc.get("cpu_threads", 0))}
