"""Latency tables: the :class:`LatencyTable` record, its JSON form, and checks that it fits.

What a table holds and how it is measured: see :mod:`jnas.estimation.latency`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

import jax.numpy as jnp
import numpy as np

from jnas.spaces.chain import ChainSpace

FORMAT = "jnas-latency-table/1"


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


def _positions_json(space: ChainSpace) -> list[dict]:
  return [{"index": p.index, "input_shape": list(p.in_shape), "output_shape": list(p.out_shape),
           "stride": p.stride} for p in space.positions()]


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
