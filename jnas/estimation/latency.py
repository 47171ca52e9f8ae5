"""Latency lookup tables measured on the current JAX backend, and latency prediction.

The best network differs per device, so jnas measures instead of assuming:
:func:`build_latency_table` compiles every candidate op at every block of a
chain space, on its real input shape, and times it (forward pass, inference
mode) on the backend JAX runs on here: CPU, GPU or TPU. A network's predicted
latency is the sum of its ops' entries plus the fixed stem and head
(:func:`predicted_latency`); under a relaxed encoding the same sum weighted by
the encoding is differentiable (:func:`expected_latency`), which is what
FBNet's loss needs.

**Timing.** Each op is jitted alone with its weights as arguments, warmed up,
then timed ``repeats`` times; each repeat runs the op ``number`` times (enough
for about a millisecond) and waits for every result
(``jax.block_until_ready``), and the entry is the median per-call time. A
jitted call has a fixed dispatch cost that a whole network pays once, not once
per op: the table measures that cost (a jitted call doing next to nothing on
the same input), subtracts it from each entry and adds it back once per
network.

**Files.** A table is JSON with the space name and fingerprint, every block's
input and output shapes, the device (kind, platform, CPU model), backend,
dtype, batch size, repeats and JAX version. :func:`load_latency_table` refuses
a table made for another space, shape, batch size or dtype, with one line
naming the mismatch. Tables made elsewhere load too if they carry ``space``,
``positions`` (input shapes) and per-op ``entries`` (see :func:`table_from_json`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jnas.spaces.chain import ChainGenotype, ChainSpace

FORMAT = "jnas-latency-table/1"
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass
class LatencyTable:
  """Measured per-op latencies of a chain space (milliseconds).

  ``ops_ms[i, j]`` is candidate ``j`` at block ``i`` with the dispatch
  overhead removed; ``fixed_ms`` (stem + head + one dispatch) is paid by every
  network.
  """

  space: str
  fingerprint: str
  space_config: dict
  candidates: tuple[str, ...]
  positions: list[dict]
  ops_ms: np.ndarray
  stem_ms: float
  head_ms: float
  overhead_ms: float
  batch_size: int
  dtype: str
  backend: str
  device: dict
  repeats: int
  warmup: int
  jax_version: str
  created: str = ""
  source: str = "measured"
  stat: str = "median"
  clock: str = "wall"

  @property
  def fixed_ms(self) -> float:
    """What every architecture pays: stem, head and one dispatch."""
    return float(self.stem_ms + self.head_ms + self.overhead_ms)

  def to_json(self) -> dict:
    """The table as a JSON-serialisable dict."""
    return {
        "format": FORMAT, "space": self.space, "space_fingerprint": self.fingerprint,
        "space_config": self.space_config, "candidates": list(self.candidates),
        "positions": self.positions, "batch_size": self.batch_size, "dtype": self.dtype,
        "backend": self.backend, "device": self.device, "repeats": self.repeats,
        "warmup": self.warmup, "jax_version": self.jax_version, "created": self.created,
        "source": self.source, "statistic": self.stat, "clock": self.clock,
        "unit": "ms", "overhead_ms": self.overhead_ms,
        "stem_ms": self.stem_ms, "head_ms": self.head_ms,
        "latency_ms": [[float(v) for v in row] for row in self.ops_ms],
    }

  def save(self, path: str | Path) -> None:
    """Writes the table as JSON (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(self.to_json(), indent=1))
    tmp.replace(path)


def device_description() -> dict[str, Any]:
  """What the table was measured on: JAX device kind, platform, CPU model, device count.

  Example:
    >>> device_description()["platform"] in ("cpu", "gpu", "tpu")
    True
  """
  dev = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return {"device_kind": str(dev.device_kind), "platform": dev.platform, "cpu_model": cpu,
          "num_devices": jax.device_count(), "host": platform.node(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def set_cpu_threads(threads: int) -> None:
  """Sets how many threads XLA:CPU uses inside one op; call before JAX starts its backend.

  ``threads=1`` runs every op on one thread (Eigen's thread pool off): the
  setting to measure in when small ops dominate, and far less sensitive to
  other processes on a shared machine, where waking pool threads costs more
  than the op. ``0`` keeps XLA's default. The flags end up in the table's
  ``device.xla_flags``.

  Example:
    >>> set_cpu_threads(1)  # doctest: +SKIP
  """
  if threads < 0:
    raise ValueError(f"threads must be >= 0, got {threads}")
  if threads == 0:
    return
  flags = os.environ.get("XLA_FLAGS", "").split()
  flags = [f for f in flags if not f.startswith(("--xla_cpu_multi_thread_eigen",
                                                  "intra_op_parallelism_threads"))]
  if threads == 1:
    flags.append("--xla_cpu_multi_thread_eigen=false")
  flags.append(f"intra_op_parallelism_threads={threads}")
  os.environ["XLA_FLAGS"] = " ".join(flags)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def time_calls(calls: Sequence[tuple[Callable[..., Any], Sequence[Any]]], *, repeats: int = 20,
               warmup: int = 3, min_repeat_s: float = 1e-3, stat: str = "median",
               clock: str = "wall") -> list[float]:
  """Seconds per call of each ``fn(*args)`` in ``calls``, measured in interleaved rounds.

  Each call is warmed up, then calibrated to ``number`` back-to-back calls
  lasting about ``min_repeat_s``; each call is timed alone and waited for
  (``jax.block_until_ready``). Round ``r`` runs one repeat of every call in
  turn, so a burst of load from other processes hits all calls alike instead
  of one; the result is the median (or minimum, ``stat="min"``) over all
  ``repeats * number`` timed calls.

  ``clock="wall"`` (default) measures elapsed time. ``clock="cpu"`` measures
  this process's CPU time instead: on the CPU backend with one thread per op
  (:func:`set_cpu_threads`) that is the op's run time without the time other
  processes hold the cores, so it suits a shared machine; it is meaningless
  for GPU or TPU, whose work it does not see.

  Example:
    >>> f = jax.jit(lambda x: x * 2)
    >>> [t > 0 for t in time_calls([(f, (jnp.ones(4),))], repeats=3)]
    [True]
  """
  if stat not in ("median", "min"):
    raise ValueError(f"unknown statistic {stat!r} (known: median, min)")
  if clock not in CLOCKS:
    raise ValueError(f"unknown clock {clock!r} (known: {', '.join(CLOCKS)})")
  now = CLOCKS[clock]
  numbers = []
  for fn, args in calls:
    for _ in range(max(warmup, 1)):
      jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    one = max(time.perf_counter() - t0, 1e-7)
    numbers.append(max(1, min(100, int(min_repeat_s / one))))
  times: list[list[float]] = [[] for _ in calls]
  for _ in range(repeats):
    for k, ((fn, args), number) in enumerate(zip(calls, numbers)):
      for _ in range(number):
        t0 = now()
        jax.block_until_ready(fn(*args))
        times[k].append(now() - t0)
  reduce = statistics.median if stat == "median" else min
  return [reduce(t) for t in times]


def time_call(fn: Callable[..., Any], args: Sequence[Any], *, repeats: int = 20,
              warmup: int = 3, min_repeat_s: float = 1e-3, stat: str = "median",
              clock: str = "wall") -> float:
  """Seconds per call of ``fn(*args)`` (see :func:`time_calls`).

  Example:
    >>> f = jax.jit(lambda x: x * 2)
    >>> time_call(f, (jnp.ones(4),), repeats=3) > 0
    True
  """
  return time_calls([(fn, args)], repeats=repeats, warmup=warmup, min_repeat_s=min_repeat_s,
                    stat=stat, clock=clock)[0]


def _check_clock(clock: str) -> None:
  if clock not in CLOCKS:
    raise ValueError(f"unknown clock {clock!r} (known: {', '.join(CLOCKS)})")
  if clock == "cpu" and jax.default_backend() != "cpu":
    raise ValueError(f"clock='cpu' cannot see work on the {jax.default_backend()} backend; "
                     f"use clock='wall'")


def _check_dtype(dtype: str) -> jnp.dtype:
  if dtype not in DTYPES:
    raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
  return jnp.dtype(dtype)


def placeholder_weights(build: Callable[[nnx.Rngs], nnx.Module], seed: int = 0,
                        dtype=jnp.float32) -> tuple[Any, Any, Any]:
  """``(graphdef, params, batch_stats)`` of ``build(rngs)`` filled with host random numbers.

  The module is built abstractly (``nnx.eval_shape``): eager JAX initialisers
  would compile one kernel per weight shape, which costs more than compiling
  the op itself. Weights are ``N(0, 0.1^2)``, batch statistics ones; values do
  not change the speed of dense float arithmetic, so this is for timing and
  shape checks, not training.

  Example:
    >>> g, p, s = placeholder_weights(lambda r: nnx.Linear(2, 3, rngs=r))
    >>> p["kernel"].shape
    (2, 3)
  """
  abstract = nnx.eval_shape(lambda: build(nnx.Rngs(seed)))
  graphdef, params, state = nnx.split(abstract, nnx.Param, nnx.BatchStat)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda a: jnp.asarray((0.1 * rng.standard_normal(a.shape)).astype(np.float32), dtype),
      params)
  state = jax.tree.map(lambda a: jnp.ones(a.shape, dtype), state)
  return graphdef, params, state


def _forward_call(build: Callable[[nnx.Rngs], nnx.Module], in_shape: Sequence[int],
                  batch_size: int, dtype, seed: int) -> tuple[Callable, tuple]:
  """A compiled inference-mode forward pass of ``build(rngs)`` and its arguments."""
  graphdef, params, state = placeholder_weights(build, seed, dtype)
  rng = np.random.default_rng(seed + 1)
  x = jnp.asarray(rng.standard_normal((batch_size,) + tuple(in_shape)).astype(np.float32), dtype)

  def fwd(p, s, x):
    return nnx.merge(graphdef, p, s)(x, train=False)

  compiled = jax.jit(fwd).lower(params, state, x).compile()
  return compiled, (params, state, x)


def _dispatch_call(shape, batch_size, dtype) -> tuple[Callable, tuple]:
  # A compiled call that touches its input but computes next to nothing: the
  # fixed price of launching compiled code from Python on this backend.
  x = jnp.zeros((batch_size,) + tuple(shape), dtype)
  p = {"w": jnp.zeros((1,), dtype)}
  fn = jax.jit(lambda p, s, x: x.reshape(-1)[:1] + p["w"]).lower(p, {}, x).compile()
  return fn, (p, {}, x)


def _positions_json(space: ChainSpace) -> list[dict]:
  return [{"index": p.index, "input_shape": list(p.in_shape), "output_shape": list(p.out_shape),
           "stride": p.stride} for p in space.positions()]


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


def table_from_json(data: Mapping) -> LatencyTable:
  """A table from its JSON form, including tables made elsewhere.

  Besides jnas's own files (``latency_ms`` as a blocks x candidates matrix), a
  table may list ``entries``: ``[{"block": i, "candidate": name, "ms": t}, ...]``
  with one entry per block and candidate; ``space``, ``candidates``,
  ``positions`` (each with ``input_shape``) and ``batch_size`` are required,
  and ``stem_ms``/``head_ms``/``overhead_ms`` default to 0.

  Example:
    >>> t = table_from_json({"space": "kernel_chain", "candidates": ["k1"], "batch_size": 1,
    ...                      "positions": [{"input_shape": [8, 1]}],
    ...                      "entries": [{"block": 0, "candidate": "k1", "ms": 0.5}]})
    >>> float(t.ops_ms[0, 0])
    0.5
  """
  if not isinstance(data, Mapping):
    raise ValueError("latency table must be a JSON object")
  for key in ("space", "candidates", "positions", "batch_size"):
    if key not in data:
      raise ValueError(f"latency table lacks {key!r}")
  cands = tuple(data["candidates"])
  nb = len(data["positions"])
  if "latency_ms" in data:
    ops = np.asarray(data["latency_ms"], np.float64)
    if ops.shape != (nb, len(cands)):
      raise ValueError(f"latency table's latency_ms has shape {ops.shape}, expected "
                       f"{(nb, len(cands))} (blocks, candidates)")
  elif "entries" in data:
    ops = np.full((nb, len(cands)), np.nan)
    for e in data["entries"]:
      try:
        i, j = int(e["block"]), cands.index(e["candidate"])
        ops[i, j] = float(e["ms"])
      except (KeyError, ValueError, IndexError, TypeError):
        raise ValueError(f"latency table entry {e!r} is not a known block/candidate with "
                         f"'ms'") from None
    missing = np.argwhere(np.isnan(ops))
    if missing.size:
      i, j = missing[0]
      raise ValueError(f"latency table has no entry for block {i}, candidate {cands[j]!r}")
  else:
    raise ValueError("latency table has neither 'latency_ms' nor 'entries'")
  if not np.all(np.isfinite(ops)) or np.any(ops < 0):
    raise ValueError("latency table has negative or non-finite entries")
  return LatencyTable(
      space=str(data["space"]), fingerprint=str(data.get("space_fingerprint", "")),
      space_config=dict(data.get("space_config", {})), candidates=cands,
      positions=[dict(p) for p in data["positions"]], ops_ms=ops,
      stem_ms=float(data.get("stem_ms", 0.0)), head_ms=float(data.get("head_ms", 0.0)),
      overhead_ms=float(data.get("overhead_ms", 0.0)), batch_size=int(data["batch_size"]),
      dtype=str(data.get("dtype", "float32")), backend=str(data.get("backend", "unknown")),
      device=dict(data.get("device", {})), repeats=int(data.get("repeats", 0)),
      warmup=int(data.get("warmup", 0)), jax_version=str(data.get("jax_version", "")),
      created=str(data.get("created", "")), source=str(data.get("source", "external")),
      stat=str(data.get("statistic", "median")), clock=str(data.get("clock", "wall")))


def check_table(table: LatencyTable, space: ChainSpace | None = None,
                batch_size: int | None = None, dtype: str | None = None) -> None:
  """Raises ``ValueError`` with one line naming how ``table`` does not fit the request.

  Example:
    >>> check_table(table, space, batch_size=1)  # doctest: +SKIP
  """
  if space is not None:
    if table.space != space.name:
      raise ValueError(f"latency table is for space {table.space!r}, not {space.name!r}")
    if tuple(table.candidates) != tuple(space.candidates):
      raise ValueError(f"latency table's candidates {list(table.candidates)} differ from the "
                       f"space's {list(space.candidates)}")
    mine = _positions_json(space)
    if len(table.positions) != len(mine):
      raise ValueError(f"latency table has {len(table.positions)} blocks, the space has "
                       f"{len(mine)}")
    for theirs, ours in zip(table.positions, mine):
      got = list(theirs.get("input_shape", []))
      if got != ours["input_shape"]:
        raise ValueError(f"latency table's block {ours['index']} input shape is {got}, the "
                         f"space's is {ours['input_shape']}")
      if "output_shape" in theirs and list(theirs["output_shape"]) != ours["output_shape"]:
        raise ValueError(f"latency table's block {ours['index']} output shape is "
                         f"{list(theirs['output_shape'])}, the space's is "
                         f"{ours['output_shape']}")
    if table.fingerprint and table.fingerprint != space.fingerprint():
      conf = space.config()
      diff = [k for k in sorted(set(conf) | set(table.space_config))
              if table.space_config.get(k) != conf.get(k)]
      what = (f"{diff[0]}={table.space_config.get(diff[0])!r} in the table, "
              f"{conf.get(diff[0])!r} here" if diff else "configuration differs")
      raise ValueError(f"latency table is for another {space.name} space "
                       f"(fingerprint {table.fingerprint} != {space.fingerprint()}): {what}")
  if batch_size is not None and table.batch_size != batch_size:
    raise ValueError(f"latency table was measured at batch size {table.batch_size}, not "
                     f"{batch_size}")
  if dtype is not None and table.dtype != str(jnp.dtype(dtype)):
    raise ValueError(f"latency table was measured in {table.dtype}, not {dtype}")


def load_latency_table(path: str | Path, space: ChainSpace | None = None,
                       batch_size: int | None = None, dtype: str | None = None
                       ) -> LatencyTable:
  """Reads a table, refusing one made for another space, shape, batch size or dtype.

  Example:
    >>> table = load_latency_table("table.json", space=space, batch_size=1)  # doctest: +SKIP
  """
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"latency table {path} does not exist (build one with "
                            f"benchmarks/latency_table.py)")
  try:
    data = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"latency table {path} is not valid JSON: {e}") from None
  table = table_from_json(data)
  check_table(table, space, batch_size, dtype)
  return table


def predicted_latency(table: LatencyTable, genotype: ChainGenotype) -> float:
  """Milliseconds: the fixed cost plus each block's chosen candidate's entry.

  Example:
    >>> predicted_latency(table, ChainGenotype(("k3", "k5")))  # doctest: +SKIP
    0.0123
  """
  if len(genotype.blocks) != table.ops_ms.shape[0]:
    raise ValueError(f"genotype has {len(genotype.blocks)} blocks, the latency table "
                     f"{table.ops_ms.shape[0]}")
  total = table.fixed_ms
  for i, name in enumerate(genotype.blocks):
    if name not in table.candidates:
      raise ValueError(f"candidate {name!r} at block {i} is not in the latency table")
    total += float(table.ops_ms[i, table.candidates.index(name)])
  return total


def expected_latency(table: LatencyTable, encoding: Mapping[str, Any] | jax.Array) -> jax.Array:
  """Milliseconds expected under an encoding: ``fixed + sum(w * table)`` (differentiable).

  ``encoding["blocks"]`` (or the array itself) is ``[..., num_blocks,
  num_candidates]``; leading batch axes are kept. A one-hot encoding gives
  :func:`predicted_latency`.

  Example:
    >>> jax.grad(lambda w: expected_latency(table, {"blocks": w}))(w)  # doctest: +SKIP
  """
  w = encoding["blocks"] if isinstance(encoding, Mapping) else encoding
  w = jnp.asarray(w)
  if w.shape[-2:] != table.ops_ms.shape:
    raise ValueError(f"encoding has shape {tuple(w.shape)}, the latency table "
                     f"{table.ops_ms.shape} (blocks, candidates)")
  ops = jnp.asarray(table.ops_ms, w.dtype if jnp.issubdtype(w.dtype, jnp.floating)
                    else jnp.float32)
  return jnp.sum(w * ops, axis=(-2, -1)) + table.fixed_ms


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


def _main(argv: Sequence[str]) -> None:
  """``python -m jnas.estimation.latency CONFIG_JSON OUT``: measure the table a config asks for.

  Used by ``jnas search`` on chain spaces; it runs in its own process so the
  config's ``latency.cpu_threads`` applies before XLA starts.
  """
  import ml_collections

  if len(argv) != 2:
    raise SystemExit("usage: python -m jnas.estimation.latency CONFIG_JSON OUT_JSON")
  config = ml_collections.ConfigDict(json.loads(Path(argv[0]).read_text()))
  st = latency_settings(config)
  set_cpu_threads(st["cpu_threads"])
  from jnas.ops.primitives import set_depthwise_impl
  from jnas.spaces.chain import space_from_config

  if "model" in config and "depthwise_impl" in config.model:
    set_depthwise_impl(config.model.depthwise_impl)
  table = build_latency_table(space_from_config(config), st["batch_size"], st["dtype"],
                              st["repeats"], seed=int(config.get("seed", 0)),
                              stat=st["statistic"], clock=st["clock"])
  table.save(argv[1])


if __name__ == "__main__":
  import sys

  _main(sys.argv[1:])
