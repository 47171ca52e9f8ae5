"""Whole-config checks that run before a run touches its work directory.

A bad count or rate found half-way through a run costs the user twice: the
traceback, and a work directory that now holds ``config.json`` of a config
that never ran (so the corrected command is refused there). :func:`validate_config`
reads the whole config up front, with no data loading, no arrays and no
compilation, and raises :class:`jnas.config.ConfigError` (a ``ValueError``)
with one line naming the field and what is wrong with it. ``jnas search`` and
``jnas train`` call it before anything else; library callers of
:func:`jnas.run.search` can call it too.

Fields are checked where they are present, by their dotted name (the rules
are :data:`jnas.config_rules._RULES`), then across fields: the strategy against the space, batch
sizes against the built-in datasets' sizes, SPOS's scoring batches, FBNet's
warm-up, PC-DARTS's channel split. ``strict=True`` also requires the keys every
run reads (``space.name``, ``data.name``, ``search.strategy``, ...).

Example:
  >>> import ml_collections
  >>> cfg = ml_collections.ConfigDict({"search": {"epochs": 0}})
  >>> try:
  ...   validate_config(cfg, strict=False)
  ... except ValueError as e:
  ...   print(e)
  search.epochs=0 must be an integer >= 1
"""

from __future__ import annotations

import csv
import os
from typing import Any, Iterable

import ml_collections

from jnas.config import ConfigError
# The per-field rules, and the names they accept (tests read the latter from here too).
from jnas.config_rules import (_ASK_TELL_STRATEGIES, _ESTIMATOR_SPACES,  # noqa: F401
                               _GRADIENT_STRATEGIES, _OBJECTIVES, _REQUIRED, _RULES, _SECTIONS,
                               _SUPERNET_STRATEGIES, _TRAIN_SIZES, _fail)

__all__ = ["COMMANDS", "validate_config", "check_workdir_path", "check_output_file",
           "dataset_train_size"]

#: Commands :func:`validate_config` knows, and the sections each one reads.
COMMANDS = ("search", "train", "info", "compare")

# ---------------------------------------------------------------------------
# Reading a config
# ---------------------------------------------------------------------------

_MISSING = object()


def _get(config: Any, key: str) -> Any:
  node = config
  for part in key.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      return _MISSING
    node = node[part]
  return node


def _leaves(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
  for k in node.keys():
    v = node[k]
    key = f"{prefix}{k}"
    if isinstance(v, (ml_collections.ConfigDict, dict)):
      yield from _leaves(v, key + ".")
    else:
      yield key, v


def dataset_train_size(name: str) -> int | None:
  """Training-set size of a built-in in-memory dataset, without loading it (``None``: unknown).

  Example:
    >>> dataset_train_size("mnist1d"), dataset_train_size("tfds:cifar10")
    (4000, None)
  """
  return _TRAIN_SIZES.get(name)


def _halves(n: int) -> tuple[int, int]:
  """Sizes of :func:`jnas.data.split_train_val`'s two parts at ``fraction=0.5``."""
  a = int(round(0.5 * n))
  return a, n - a


# ---------------------------------------------------------------------------
# The whole config
# ---------------------------------------------------------------------------


def validate_config(config: Any, command: str = "search", *, strict: bool = True) -> None:
  """Checks a config for ``command`` before any work; ``ConfigError`` names the bad field.

  Checks every present field the command reads (counts positive, rates finite
  and positive, probabilities and momenta in range, names known), then:
  the search strategy against the space (``fbnet`` on chain spaces, ``darts``,
  ``gdas``, ``snas`` on cell spaces, ``spos`` anywhere), the mitigations
  against the strategy, the space's own construction (``space.*``), batch
  sizes against the built-in datasets' training sets (a search uses half for
  weights and half for alpha or scoring), SPOS's scoring batches, FBNet's
  warm-up, and that ``search.partial_channels`` divides ``search.channels``.

  Args:
    config: the loaded config (after overrides).
    command: ``search``, ``train``, ``info`` or ``compare``; what the run reads.
    strict: also require the keys every run of ``command`` reads
      (``space.name``, ``data.name``, ...). ``False`` checks what is present.

  Raises:
    ConfigError: one line, naming the field and what is wrong.

  Example:
    >>> from jnas.config import apply_overrides, load_config
    >>> cfg = load_config("experiments/darts_mnist1d.py")                   # doctest: +SKIP
    >>> validate_config(apply_overrides(cfg, ["search.w_lr=-1"]))           # doctest: +SKIP
    Traceback (most recent call last):
    ConfigError: search.w_lr=-1.0 must be a finite number > 0
  """
  if command not in COMMANDS:
    raise ValueError(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
  if isinstance(config, dict) and not isinstance(config, ml_collections.ConfigDict):
    config = ml_collections.ConfigDict(config)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"the config is a {type(config).__name__}, not an ml_collections.ConfigDict")
  if not list(config.keys()):
    raise ConfigError("the config is empty (does get_config() return the ConfigDict it "
                      "builds?)")
  sections = _SECTIONS[command]
  for name in sections:
    node = _get(config, name)
    if name != "seed" and node is not _MISSING and not isinstance(
        node, (ml_collections.ConfigDict, dict)):
      raise _fail(name, node, "must be a section of keys (a ConfigDict), not a value")
  if strict:
    missing = [k for k in _REQUIRED[command] if _get(config, k) is _MISSING]
    if missing:
      raise ConfigError(f"the config lacks {', '.join(missing)} (every `jnas {command}` "
                        f"reads {'it' if len(missing) == 1 else 'them'})")
  elif command in ("search", "compare") and _get(config, "search") is _MISSING:
    raise ConfigError(f"the config has no 'search' section (top-level keys: "
                      f"{', '.join(sorted(map(str, config.keys())))})")

  # ---- One field at a time. ----
  # A search with retraining switched off does not read the rest of the retrain section.
  skip_retrain = command == "search" and _get(config, "retrain.enabled") is False
  for name in sections:
    node = _get(config, name)
    if node is _MISSING:
      continue
    items = [(name, node)] if name == "seed" else _leaves(node, name + ".")
    for key, value in items:
      rule = _RULES.get(key)
      if rule is not None and not (skip_retrain and name == "retrain" and key != "retrain.enabled"):
        rule(key, value)

  # ---- Across fields. ----
  data = _get(config, "data.name")
  if data is not _MISSING:
    from jnas.data import available_datasets  # noqa: PLC0415 (registers names, loads nothing)

    if data not in available_datasets():
      raise _fail("data.name", data, f"is not a known dataset (known: "
                                     f"{', '.join(available_datasets())})")
  space = _get(config, "space.name")
  if space is not _MISSING:
    _check_space(config, space)
  if command in ("search", "compare"):
    _check_search(config, space)
  retrain = _get(config, "retrain.enabled")
  if command == "train" or (command == "search" and retrain is not False):
    _check_retrain(config)


def _kit(name: Any):
  """The registration of the space named ``name``; ``None`` when it is not registered."""
  from jnas.spaces.registry import space_kit, space_names  # noqa: PLC0415

  return space_kit(name) if name in space_names() else None


def _is_chain(name: Any) -> bool:
  """Whether the space named ``name`` is a registered chain space (FBNet's family)."""
  kit = _kit(name)
  return kit is not None and kit.family == "chain"


def _check_space(config: Any, name: str) -> None:
  """The space exists and builds (``num_nodes``, ``primitives``, chain stages, ...)."""
  from jnas.spaces.registry import space_kit, space_names  # noqa: PLC0415 (no arrays built)

  if name not in space_names():
    raise _fail("space.name", name, f"is not a known search space (known: "
                                    f"{', '.join(space_names())})")
  kit = space_kit(name)
  try:
    if kit.family == "chain":
      for key in ("data.input_shape", "data.num_classes"):
        if _get(config, key) is _MISSING:
          raise ConfigError(f"the {name} space needs {key} in the config")
    kit.build_space(config if isinstance(config, ml_collections.ConfigDict)
                    else ml_collections.ConfigDict(config))
  except ConfigError:
    raise
  except (ValueError, TypeError, KeyError, AttributeError) as e:
    raise ConfigError(f"space ({name}): {' '.join(str(e).split())}") from None


def _check_search(config: Any, space: Any) -> None:
  sc = _get(config, "search")
  if sc is _MISSING:
    return
  strategy = _get(config, "search.strategy")
  if strategy is not _MISSING and space is not _MISSING:
    known = (("fbnet", "spos") if _is_chain(space)
             else _GRADIENT_STRATEGIES + ("darts2", "spos") + _ASK_TELL_STRATEGIES)
    if strategy not in known:
      raise _fail("search.strategy", strategy,
                  f"is not a strategy for the {space} space (known there: {', '.join(known)})")
  if strategy == "darts2":  # second-order DARTS: checked (and run) as darts with order 2
    strategy = "darts"
  _check_mitigations(config, strategy, space)
  _check_estimator(config, strategy, space)

  epochs = _get(config, "search.epochs")
  prune = _get(config, "search.prune_epochs")
  if prune not in (_MISSING, None) and epochs is not _MISSING:
    late = [e for e in prune if e >= epochs]
    if late:
      raise _fail("search.prune_epochs", tuple(prune),
                  f"prunes after epoch {late[0]}, but the search has {epochs} epochs")
  eps_min, eps_max = _get(config, "search.sdarts_eps_min"), _get(config, "search.sdarts_eps_max")
  if _MISSING not in (eps_min, eps_max) and eps_min > eps_max:
    raise ConfigError(f"search.sdarts_eps_min={eps_min:g} is larger than "
                      f"search.sdarts_eps_max={eps_max:g}")
  warmup = _get(config, "search.warmup_epochs")
  if strategy == "fbnet" and _MISSING not in (warmup, epochs) and warmup >= epochs:
    raise ConfigError(f"search.warmup_epochs={warmup} leaves no epoch to search: it must be "
                      f"less than search.epochs={epochs}")
  k = _get(config, "search.partial_channels")
  if k is not _MISSING and k != 1:
    if _kit(space) is not None and not _kit(space).partial_channels:
      raise _fail("search.partial_channels", k,
                  f"(PC-DARTS) is implemented for the nb201 space only; the {space} supernet "
                  f"needs 1")
    channels = _get(config, "search.channels")
    if channels is not _MISSING and channels % k:
      raise _fail("search.partial_channels", k,
                  f"must divide search.channels={channels} (each edge sees channels/K)")
  top_k, population = _get(config, "evolution.top_k"), _get(config, "evolution.population")
  if strategy == "spos" and _MISSING not in (top_k, population) and top_k > population:
    raise ConfigError(f"evolution.top_k={top_k} is larger than evolution.population="
                      f"{population}")
  source = _get(config, "search.supernet_from")
  if isinstance(source, str) and source:
    if strategy != "spos" and _get(config, "search.estimator") != "supernet":
      raise ConfigError(f"search.supernet_from={source!r} searches a trained SPOS supernet: it "
                        f"needs search.strategy=spos or search.estimator=supernet, not "
                        f"{strategy!r}")
    from jnas.search.spos import supernet_source  # noqa: PLC0415 (jax: only when set)

    try:
      supernet_source(config)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  if _get(config, "search.pool_sampling") == "unique" and space != "nb201":
    raise ConfigError(f"search.pool_sampling=unique draws NAS-Bench-201 cells per function: it "
                      f"needs space.name=nb201, not {space!r}")
  table = _get(config, "latency.table")
  if _is_chain(space) and isinstance(table, str) and table and not os.path.isfile(table):
    raise ConfigError(f"latency.table={table!r}: there is no such file")

  # ---- Batch sizes against the data (built-in datasets only: no loading). ----
  bs = _get(config, "search.batch_size")
  data = _get(config, "data.name")
  n = dataset_train_size(data) if isinstance(data, str) else None
  if bs is _MISSING or n is None:
    return
  weights_half, other_half = _halves(n)
  if bs > min(weights_half, other_half):
    other = "scoring" if strategy == "spos" else "the architecture"
    raise _fail("search.batch_size", bs,
                f"is larger than half of the {data} training set ({min(weights_half, other_half)} "
                f"examples): a search uses one half for the weights and the other for {other}")
  if strategy == "spos":
    calib, val = _get(config, "evolution.calib_batches"), _get(config, "evolution.val_batches")
    if calib is not _MISSING and calib > weights_half // bs:
      raise ConfigError(f"evolution.calib_batches={calib} exceeds the {weights_half // bs} "
                        f"batches of search.batch_size={bs} in the weights half of {data}")
    if val is not _MISSING and val * bs > other_half:
      raise ConfigError(f"evolution.val_batches={val} x search.batch_size={bs} needs "
                        f"{val * bs} validation examples; the scoring half of {data} has "
                        f"{other_half}")


def _check_estimator(config: Any, strategy: Any, space: Any) -> None:
  """The (strategy, estimator) pair fits, the table exists with its columns, a budget ends it."""
  est = _get(config, "search.estimator")
  est = "" if est is _MISSING else est
  finalists = _get(config, "search.finalists")
  if finalists not in (_MISSING, None, 0):
    if strategy != "spos":
      raise _fail("search.finalists", finalists, f"measures SPOS's best candidates; "
                                                 f"search.strategy={strategy!r} has none")
    if _get(config, "search.finalist_estimator") in (_MISSING, "table"):
      if space not in (_MISSING, "nb201"):
        raise _fail("search.finalist_estimator", "table", f"scores nb201 cells, not {space}")
      _check_table(config, "search.finalists with search.finalist_estimator='table'")
  if strategy not in _ASK_TELL_STRATEGIES:
    if est:
      raise _fail("search.estimator", est,
                  f"does not fit search.strategy={strategy!r}, which scores by its own supernet "
                  f"(estimators score {', '.join(_ASK_TELL_STRATEGIES)})")
    return
  if not est:
    raise ConfigError(f"search.strategy={strategy!r} needs search.estimator (one of: "
                      f"{', '.join(_ESTIMATOR_SPACES)})")
  if est == "predictor":
    if strategy in ("nsga2", "dpp_net"):
      raise _fail("search.estimator", est, f"predicts one objective; search.strategy="
                                           f"{strategy!r} needs two")
    base = _get(config, "search.predictor_base")
    est = "table" if base in (_MISSING, None) else base  # what the predictor learns from
  want = _ESTIMATOR_SPACES[est]
  if want is not None and space is not _MISSING and space != want:
    raise _fail("search.estimator", est, f"scores {want} cells, not the {space} space")
  if want is None and space is not _MISSING:
    from jnas.spaces.registry import space_kit  # noqa: PLC0415

    kit = space_kit(space)
    if kit.supernet is None or kit.network is None:
      raise _fail("search.estimator", est, f"trains single paths of a supernet; the {space} "
                                           f"space registers no supernet or network")
  objective = _get(config, "search.objective")
  objective = "" if objective in (_MISSING, None) else str(objective)
  if objective and strategy not in ("nsga2", "dpp_net"):
    raise _fail("search.objective", objective, f"is a second objective: search.strategy="
                                                f"{strategy!r} uses one (nsga2 and dpp_net use it)")
  if objective and objective not in _OBJECTIVES and est != "table":
    raise _fail("search.objective", objective, f"is not one of {', '.join(_OBJECTIVES)} (a "
                                                f"column name needs search.estimator='table')")
  if est == "scratch" and strategy == "dpp_net" and not objective:
    raise ConfigError("search.strategy='dpp_net' needs the cost of every candidate before it is "
                      "measured: use search.estimator='table' or set search.objective (params, "
                      "flops, latency)")
  prefilter = _get(config, "search.prefilter")
  if prefilter not in (_MISSING, None, ""):
    if est == "supernet" or strategy in ("nsga2", "dpp_net") or space not in (_MISSING, "nb201"):
      raise _fail("search.prefilter", prefilter,
                  "filters what a table or scratch estimator measures for a one-objective "
                  "strategy on nb201 cells")
  if est == "supernet":
    if strategy not in _SUPERNET_STRATEGIES:
      raise ConfigError(f"search.estimator='supernet' scores one objective; search.strategy="
                        f"{strategy!r} needs a cost per candidate (use one of "
                        f"{', '.join(_SUPERNET_STRATEGIES)}, or search.estimator='table')")
    return  # SPOS's training and evolution settings apply (evolution.evals ends it)
  evals, budget_s = _get(config, "search.evals"), _get(config, "search.budget_s")
  if evals in (_MISSING, 0) and budget_s in (_MISSING, 0):
    raise ConfigError(f"search.strategy={strategy!r} needs search.evals >= 1 or "
                      f"search.budget_s > 0 to end")
  if est == "table":
    _check_table(config)


def _check_table(config: Any, who: str = "search.estimator='table'") -> None:
  table = _get(config, "search.table")
  if table in (_MISSING, ""):
    raise ConfigError(f"{who} needs search.table (a benchmark CSV file)")
  if not os.path.isfile(table):
    raise _fail("search.table", table, "is not a file")
  columns = _get(config, "search.table_columns")
  names = [c.strip() for c in str("arch_str,val_acc,train_seconds" if columns is _MISSING
                                  else columns).split(",")]
  if len(names) not in (3, 4) or not all(names):
    raise _fail("search.table_columns", columns, "must name ARCH,SIGNAL,COST[,REPORT] columns")
  try:
    with open(table, newline="") as f:
      header = [h.strip() for h in next(csv.reader(f), [])]
  except (OSError, UnicodeDecodeError) as e:
    raise _fail("search.table", table, f"cannot be read ({type(e).__name__})") from None
  missing = [c for c in names if c not in header]
  if missing:
    raise _fail("search.table_columns", ",".join(names),
                f"names {missing[0]!r}, not a column of {table} (columns: {', '.join(header)})")
  objective = _get(config, "search.objective")
  if objective not in (_MISSING, None, "") and objective not in _OBJECTIVES + tuple(header):
    raise _fail("search.objective", objective, f"is neither one of {', '.join(_OBJECTIVES)} nor "
                                                f"a column of {table} (columns: "
                                                f"{', '.join(header)})")


def _check_mitigations(config: Any, strategy: Any, space: Any) -> None:
  text = _get(config, "search.mitigations")
  if text is _MISSING or not text:
    return
  from jnas.strategies.registry import GUMBEL_MITIGATIONS, mitigation_names  # noqa: PLC0415

  try:
    names = mitigation_names({"mitigations": text})
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if strategy in ("gdas", "snas"):
    bad = [n for n in names if n not in GUMBEL_MITIGATIONS]
    if bad:
      raise ConfigError(f"search.mitigations {', '.join(bad)} apply to strategy 'darts' only, "
                        f"not {strategy!r} (with {strategy}: {', '.join(GUMBEL_MITIGATIONS)})")
  elif strategy in ("spos", "fbnet"):
    raise ConfigError(f"search.mitigations={text!r}: mitigations act on DARTS's architecture "
                      f"parameters; strategy {strategy!r} has none")
  if "darts_minus" in names:
    prims = _get(config, "space.primitives")
    if prims not in (_MISSING, None, ()) and "skip_connect" not in prims:
      raise ConfigError("search.mitigations 'darts_minus' needs skip_connect in "
                        "space.primitives")


def _check_retrain(config: Any) -> None:
  bs = _get(config, "retrain.batch_size")
  data = _get(config, "data.name")
  n = dataset_train_size(data) if isinstance(data, str) else None
  if bs is not _MISSING and n is not None and bs > n:
    raise _fail("retrain.batch_size", bs, f"is larger than the {data} training set ({n} "
                                          f"examples)")


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------


def check_workdir_path(workdir: str | os.PathLike, flag: str = "--workdir") -> None:
  """Refuses a work directory that cannot be one, before anything is written there.

  A path that is a file, lies under a file, or (itself, or the nearest folder
  that exists above it) cannot be written to: ``ConfigError`` naming it.

  Example:
    >>> check_workdir_path("/proc/version")
    Traceback (most recent call last):
    ...
    jnas.config.ConfigError: --workdir /proc/version is a file, not a directory
  """
  path = os.path.abspath(os.fspath(workdir))
  shown = os.fspath(workdir)
  if os.path.isdir(path):
    if not os.access(path, os.W_OK | os.X_OK):
      raise ConfigError(f"{flag} {shown} is not writable (permission denied)")
    return
  if os.path.lexists(path):
    raise ConfigError(f"{flag} {shown} is a file, not a directory" if os.path.isfile(path)
                      else f"{flag} {shown} exists and is not a directory")
  parent = os.path.dirname(path)
  while parent and not os.path.lexists(parent):
    up = os.path.dirname(parent)
    if up == parent:
      break
    parent = up
  if os.path.lexists(parent) and not os.path.isdir(parent):
    raise ConfigError(f"{flag} {shown} cannot be created: {parent} is a file")
  if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError(f"{flag} {shown} cannot be created: {parent} is not writable "
                      f"(permission denied)")


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> None:
  """Refuses an output file path that cannot be written: a directory, or under a file.

  Example:
    >>> check_output_file("/")
    Traceback (most recent call last):
    ...
    jnas.config.ConfigError: --out / is a directory; give a file name
  """
  shown = os.fspath(path)
  full = os.path.abspath(shown)
  if os.path.isdir(full):
    raise ConfigError(f"{flag} {shown} is a directory; give a file name")
  if os.path.lexists(full) and not os.access(full, os.W_OK):
    raise ConfigError(f"{flag} {shown} is not writable (permission denied)")
  check_workdir_path(os.path.dirname(full) or ".", flag=f"{flag} {shown}: its folder")
