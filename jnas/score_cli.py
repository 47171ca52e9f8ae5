"""``jnas score``: zero-cost proxy scores of a file of NAS-Bench-201 cells, written as ``arch,score`` CSV.

  jnas score --config experiments/nb201_cifar10.py --estimator synflow --archs cells.txt \\
      --out scores.csv

``cells.txt`` holds one benchmark string per line
(``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; blank lines and ``#`` comments are
skipped). The cells are scored in the config's NAS-Bench-201 skeleton
(``search.channels``, ``search.cells_per_stage``; change them with
``--config.search.channels=...``), initialised from ``--seed`` (default:
``config.seed``). ``synflow``, ``params`` and ``flops`` need no data: the
input shape comes from ``config.data.input_shape`` when the config states it
(as ``experiments/nb201_cifar10.py`` does), so CIFAR-10 need not be
prepared. ``naswot``, ``snip`` and ``grad_norm`` take one minibatch of
``--batch`` training examples (drawn with the seed) of ``config.data.name``.
The CSV is written atomically (a temporary file, then a rename). Higher
scores are better for every estimator (see :mod:`jnas.estimation.zero_cost`).

Bad input is a one-line ``ValueError`` (``FileNotFoundError`` for a missing
archs file), which the command line prints as ``jnas: error: ...`` and exits 2.

Example:
  >>> from jnas.config import load_config  # doctest: +SKIP
  >>> score_archs(load_config("experiments/nb201_cifar10.py"), "params", "cells.txt",
  ...             "scores.csv")  # doctest: +SKIP
  {'estimator': 'params', 'archs': 3, 'out': 'scores.csv', ...}
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

#: The estimators' names, as :data:`jnas.estimation.zero_cost.PROXIES`.
ESTIMATORS = ("synflow", "naswot", "snip", "grad_norm", "params", "flops")

__all__ = ["ESTIMATORS", "add_arguments", "run", "score_archs", "read_archs", "skeleton_from_config",
           "write_scores"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The ``score`` subcommand's options (``--config`` is added by the caller)."""
  # Written out rather than imported: zero_cost imports JAX, and `jnas --help` should not
  # (a test checks the list against zero_cost.PROXIES).
  parser.add_argument("--estimator", required=True, metavar="NAME",
                      help=f"zero-cost proxy: {', '.join(ESTIMATORS)}")
  parser.add_argument("--archs", required=True, metavar="FILE",
                      help="one NAS-Bench-201 architecture string per line")
  parser.add_argument("--out", required=True, metavar="CSV", help="where to write arch,score rows")
  parser.add_argument("--batch", type=int, default=None, metavar="N",
                      help="minibatch size for naswot, snip, grad_norm (default: 128 for naswot, "
                           "64 for snip and grad_norm, as in their papers)")
  parser.add_argument("--seed", type=int, default=None, metavar="S",
                      help="weight initialisation and minibatch draw (default: config.seed)")


def run(config: Any, args: argparse.Namespace) -> int:
  """Runs ``jnas score`` for parsed ``args``; prints a one-line summary, returns 0."""
  r = score_archs(config, args.estimator, args.archs, args.out, batch=args.batch, seed=args.seed)
  print(f"{r['estimator']}: {r['archs']} architectures scored in {r['seconds']:.1f} s "
        f"(batch {r['batch']}, seed {r['seed']}), written to {r['out']}")
  return 0


def read_archs(path: str | os.PathLike, space: Any = None) -> list[str]:
  """The architecture strings of ``path``, one per line; one-line errors name the bad line.

  Example:
    >>> read_archs("cells.txt")  # doctest: +SKIP
    ['|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|']
  """
  from jnas.spaces.nb201 import NB201Space  # noqa: PLC0415

  space = space or NB201Space()
  p = Path(path)
  if not p.is_file():
    raise FileNotFoundError(f"archs file {p} does not exist" if not p.exists()
                            else f"archs file {p} is not a file")
  archs = []
  for n, line in enumerate(p.read_text().splitlines(), start=1):
    text = line.strip()
    if not text or text.startswith("#"):
      continue
    try:
      space.parse(text)
    except ValueError as e:
      raise ValueError(f"archs file {p} line {n}: {text!r} is not a NAS-Bench-201 cell "
                       f"({e})") from None
    archs.append(text)
  if not archs:
    raise ValueError(f"archs file {p} holds no architecture strings")
  return archs


def skeleton_from_config(config: Any, dataset: Any = None):
  """The NAS-Bench-201 skeleton a config's supernet has (``search.channels``, ``cells_per_stage``).

  The input shape and classes come from ``config.data`` when it states them,
  else from ``dataset`` (or the loaded dataset).

  Example:
    >>> skeleton_from_config(load_config("experiments/nb201_cifar10.py"))  # doctest: +SKIP
    NB201Skeleton(input_shape=(32, 32, 3), num_classes=10, channels=16, cells_per_stage=5)
  """
  from jnas.estimation.zero_cost import NB201Skeleton  # noqa: PLC0415

  name = config.get("space", {}).get("name")
  if name != "nb201":
    raise ValueError(f"jnas score scores NAS-Bench-201 cells; the config's space is {name!r} "
                     f"(space.name = 'nb201' needed)")
  data = config.data
  if "input_shape" in data and "num_classes" in data:
    shape, classes = tuple(data.input_shape), int(data.num_classes)
  else:
    ds = dataset if dataset is not None else _load_data(config)
    shape, classes = tuple(ds.input_shape), int(ds.num_classes)
  return NB201Skeleton(shape, classes, channels=int(config.search.channels),
                       cells_per_stage=int(config.search.cells_per_stage))


def _load_data(config: Any):
  from jnas.data import DEFAULT_DATA_SEED, load_dataset  # noqa: PLC0415

  return load_dataset(config.data.name, seed=config.data.get("seed", DEFAULT_DATA_SEED))


def _space(config: Any):
  from jnas.search.common import build_space  # noqa: PLC0415
  from jnas.spaces.nb201 import NB201_OPS  # noqa: PLC0415

  space = build_space(config)
  if tuple(getattr(space, "ops", ())) != NB201_OPS:
    raise ValueError("jnas score needs the benchmark's NAS-Bench-201 cell (ops "
                     f"{', '.join(NB201_OPS)})")
  return space


def score_archs(config: Any, estimator: str, archs: str | os.PathLike, out: str | os.PathLike, *,
                batch: int | None = None, seed: int | None = None) -> dict[str, Any]:
  """Scores every cell of the file ``archs`` with ``estimator`` and writes ``out`` (CSV).

  Args:
    config: a loaded NAS-Bench-201 config.
    estimator: a proxy name (:data:`jnas.estimation.zero_cost.PROXIES`).
    archs: a text file, one architecture string per line.
    out: the CSV to write (``arch,score``, one row per input line, in order).
    batch: minibatch size of the data proxies (default: their papers').
    seed: weights and minibatch (default: ``config.seed``).

  Returns:
    A summary: estimator, number of architectures, out, batch, seed, seconds.
  """
  import numpy as np  # noqa: PLC0415

  from jnas.estimation.zero_cost import DATA_PROXIES, ZeroCost, check_proxy  # noqa: PLC0415
  from jnas.estimation.zero_cost import default_batch  # noqa: PLC0415

  check_proxy(estimator)
  space = _space(config)
  cells = read_archs(archs, space)
  seed = int(config.get("seed", 0) if seed is None else seed)
  needs_data = estimator in DATA_PROXIES
  n = int(batch if batch is not None else default_batch(estimator))
  if needs_data and n < 2:
    raise ValueError(f"--batch must be >= 2 for {estimator}, got {n}")
  ds = _load_data(config) if needs_data else None
  skeleton = skeleton_from_config(config, ds)
  x = y = None
  if needs_data:
    if tuple(ds.input_shape) != skeleton.input_shape:
      raise ValueError(f"config data.input_shape {skeleton.input_shape} differs from the "
                       f"dataset {config.data.name!r} ({tuple(ds.input_shape)})")
    if n > len(ds.x_train):
      raise ValueError(f"--batch {n} is larger than the {len(ds.x_train)} training examples")
    pick = np.random.default_rng(seed).choice(len(ds.x_train), size=n, replace=False)
    x, y = ds.x_train[pick], ds.y_train[pick]
  t = time.perf_counter()
  scores = ZeroCost(skeleton, space=space, seed=seed).score(estimator, cells, x, y)
  seconds = time.perf_counter() - t
  write_scores(out, cells, scores)
  return {"estimator": estimator, "archs": len(cells), "out": str(out),
          "batch": n if needs_data else 0, "seed": seed, "seconds": seconds}


def write_scores(path: str | os.PathLike, archs: list[str], scores: Any) -> None:
  """Writes ``arch,score`` rows atomically (``repr`` of each float, so nothing is rounded).

  Example:
    >>> write_scores("s.csv", ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"], [1.5])  # doctest: +SKIP
  """
  import csv  # noqa: PLC0415
  import io  # noqa: PLC0415

  from jnas.utils.metrics import _write_text_atomic  # noqa: PLC0415 (one atomic writer)

  buf = io.StringIO(newline="")
  writer = csv.writer(buf)
  writer.writerow(["arch", "score"])
  for a, s in zip(archs, scores):
    writer.writerow([a, repr(float(s))])
  _write_text_atomic(os.fspath(path), buf.getvalue())
