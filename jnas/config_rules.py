"""The per-field rules of a config check: each dotted key's allowed values, and what each command needs.

:mod:`jnas.validate` applies :data:`_RULES` to every present key, requires
:data:`_REQUIRED`'s keys under ``strict=True`` and ignores the sections a
command does not read (:data:`_SECTIONS`), then checks across fields. The
names the rules accept (strategies, estimators, objectives) are kept here as
plain tuples so that checking a config imports no JAX; tests keep them equal
to the registries they mirror.

Example:
  >>> _RULES["search.epochs"]("search.epochs", 3)  # passes: an integer >= 1
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

from jnas.config import ConfigError

# Larger counts are typos (or an overflow waiting in numpy's int32 shapes).
_INT_MAX = 2**31 - 1

# Training-set sizes of the in-memory datasets jnas registers, so batch sizes can be checked
# without loading (or generating) the data. tests/test_bad_input.py checks them against
# load_dataset. Datasets not listed here (TFDS, user-registered) are not size-checked.
_TRAIN_SIZES = {"digits": 1437, "mnist1d": 4000, "mnist1d_40k": 10_000,
                "mnist1d_40k_noisy": 10_000}

# The gradient strategies of jnas.strategies.registry.GRADIENT_STRATEGIES; a test keeps them equal
# (importing the registry here would import JAX for a config check).
_GRADIENT_STRATEGIES = ("darts", "gdas", "snas")
# The sample-based strategies and their estimators (jnas.search.ask_tell; a test keeps them equal),
# and the space each estimator scores (None: any registered space with a supernet and a network).
_ASK_TELL_STRATEGIES = ("random", "rea", "topk", "nsga2", "reinforce", "pnas", "dpp_net")
_ESTIMATOR_SPACES = {"table": "nb201", "scratch": None, "supernet": None, "predictor": None}
# The strategies the supernet estimator runs (jnas.search.ask_tell.SUPERNET_STRATEGIES).
_SUPERNET_STRATEGIES = ("random", "rea", "topk", "reinforce", "pnas")
# The architecture costs search.objective names (jnas.estimation.objectives.OBJECTIVES).
_OBJECTIVES = ("params", "flops", "latency")
# The zero-cost proxies search.prefilter names (jnas.estimation.zero_cost.PROXIES).
_PROXIES = ("synflow", "naswot", "snip", "grad_norm", "params", "flops")


# ---------------------------------------------------------------------------
# Value rules
# ---------------------------------------------------------------------------


def _fail(key: str, value: Any, what: str) -> ConfigError:
  return ConfigError(f"{key}={_show(value)} {what}")


def _show(value: Any) -> str:
  text = repr(value) if isinstance(value, str) else str(value)
  return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_at_least(low: int) -> Callable[[str, Any], None]:
  def check(key: str, value: Any) -> None:
    if not _is_int(value):
      raise _fail(key, value, f"must be an integer >= {low}")
    if not low <= value <= _INT_MAX:
      raise _fail(key, value, f"must be an integer >= {low}" if value < low
                  else f"is too large (at most {_INT_MAX})")
  return check


def _real(low: float, *, low_open: bool, high: float = math.inf,
          high_open: bool = True) -> Callable[[str, Any], None]:
  lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
  if high == math.inf:
    want = f"a finite number {'>' if low_open else '>='} {low:g}"
  else:
    want = f"a number in {lo}{low:g}, {high:g}{hi}"

  def check(key: str, value: Any) -> None:
    if not _is_real(value):
      raise _fail(key, value, f"must be {want}")
    v = float(value)
    ok = (math.isfinite(v) and (v > low if low_open else v >= low)
          and (v < high if high_open else v <= high))
    if not ok:
      raise _fail(key, value, f"must be {want}")
  return check


def _one_of(*choices: Any) -> Callable[[str, Any], None]:
  def check(key: str, value: Any) -> None:
    if isinstance(value, bool) or value not in choices:
      raise _fail(key, value, f"must be one of {', '.join(map(repr, choices))}")
  return check


def _is_bool(key: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise _fail(key, value, "must be true or false")


def _is_str(key: str, value: Any) -> None:
  if not isinstance(value, str):
    raise _fail(key, value, "must be a string")


def _non_empty_str(key: str, value: Any) -> None:
  if not isinstance(value, str) or not value.strip():
    raise _fail(key, value, "must be a non-empty string")


def _shape(key: str, value: Any) -> None:
  if (not isinstance(value, (tuple, list)) or not value
      or not all(_is_int(v) and 1 <= v <= _INT_MAX for v in value)):
    raise _fail(key, value, "must be a non-empty list of positive integers")


def _epoch_list(key: str, value: Any) -> None:
  if not isinstance(value, (tuple, list)) or not all(_is_int(v) and v >= 1 for v in value):
    raise _fail(key, value, "must be a list of epochs >= 1 (empty: a third and two thirds)")


def _str_list(key: str, value: Any) -> None:
  if value is None:
    return
  if (not isinstance(value, (tuple, list)) or not value
      or not all(isinstance(v, str) and v for v in value)):
    raise _fail(key, value, "must be a non-empty list of op names")
  if len(set(value)) != len(value):
    raise _fail(key, value, "names an op twice")


_COUNT = _int_at_least(1)
_NON_NEG_INT = _int_at_least(0)
_RATE = _real(0.0, low_open=True)             # learning rates, temperatures, clip norms
_NON_NEG = _real(0.0, low_open=False)          # decays, regulariser weights
_MOMENTUM = _real(0.0, low_open=False, high=1.0, high_open=True)
_PROB = _real(0.0, low_open=False, high=1.0, high_open=False)

# Dotted key -> rule, applied where the key is present. Keys a config may lack
# (SEARCH_OPTIONAL_DEFAULTS, a strategy's own settings) are only checked when given.
_RULES: dict[str, Callable[[str, Any], None]] = {
    "seed": _NON_NEG_INT,
    "data.name": _non_empty_str,
    "data.seed": _NON_NEG_INT,
    "data.input_shape": _shape,
    "data.num_classes": _int_at_least(2),
    "space.name": _non_empty_str,
    "space.num_nodes": _COUNT,
    "space.primitives": _str_list,
    "model.depthwise_impl": _one_of("auto", "taps", "xla", "native"),
    "model.cpu_library_fusions": _one_of("auto", "on", "off"),
    # search
    "search.strategy": _non_empty_str,
    "search.order": _one_of(1, 2),
    "search.epochs": _COUNT,
    "search.batch_size": _COUNT,
    "search.channels": _COUNT,
    "search.layers": _COUNT,
    "search.cells_per_stage": _COUNT,
    "search.pool_size": _COUNT,
    "search.warmup_epochs": _NON_NEG_INT,
    "search.data_parallel": _int_at_least(-1),
    "search.w_lr": _RATE,
    "search.w_lr_min": _NON_NEG,
    "search.momentum": _MOMENTUM,
    "search.weight_decay": _NON_NEG,
    "search.grad_clip": _RATE,
    "search.a_lr": _RATE,
    "search.a_b1": _MOMENTUM,
    "search.a_b2": _MOMENTUM,
    "search.a_weight_decay": _NON_NEG,
    "search.tau_max": _RATE,
    "search.tau_min": _RATE,
    "search.tau0": _RATE,
    "search.tau_decay": _RATE,
    "search.mitigations": _is_str,
    "search.fairdarts_w01": _NON_NEG,
    "search.drnas_anchor": _NON_NEG,
    "search.darts_minus_beta0": _NON_NEG,
    "search.beta_decay_max": _NON_NEG,
    "search.sdarts_eps_min": _NON_NEG,
    "search.sdarts_eps_max": _NON_NEG,
    "search.prune_epochs": _epoch_list,
    "search.early_stop_skips": _NON_NEG_INT,
    "search.partial_channels": _COUNT,
    "search.estimator": _one_of("", *_ESTIMATOR_SPACES),
    "search.predictor_base": _one_of("table", "scratch"),
    "search.predictor_warmup": _int_at_least(2),
    "search.predictor_kappa": _NON_NEG,
    "search.table": _is_str,
    "search.table_columns": _non_empty_str,
    "search.evals": _NON_NEG_INT,
    "search.budget_s": _NON_NEG,
    "search.scratch_epochs": _COUNT,
    "search.objective": _is_str,          # params, flops, latency or a table column
    "search.strategy_settings": _is_str,
    "search.prefilter": _one_of("", *_PROXIES),
    "search.prefilter_keep": _real(0.0, low_open=True, high=1.0, high_open=False),
    "search.prefilter_pool": _COUNT,
    "search.finalists": _int_at_least(0),
    "search.finalist_estimator": _one_of("table", "scratch"),
    "search.few_shot": _is_str,           # SPOS's split edge KEY:EDGE, parsed by the strategy
    "search.few_shot_warmup": _PROB,      # a fraction of the SPOS steps
    "search.pool_sampling": _one_of("uniform", "unique"),
    "search.supernet_from": _is_str,      # a finished SPOS run's work directory
    # evolution (SPOS)
    "evolution.population": _COUNT,
    "evolution.top_k": _COUNT,
    "evolution.evals": _COUNT,
    "evolution.crossover_fraction": _PROB,
    "evolution.calib_batches": _COUNT,
    "evolution.val_batches": _COUNT,
    "evolution.merge_val_batches": _is_bool,
    # FBNet and its latency table
    "fbnet.alpha": _RATE,
    "fbnet.beta": _NON_NEG,
    "fbnet.temperature": _RATE,
    "fbnet.temperature_decay": _RATE,
    "fbnet.target_ms": _NON_NEG,
    "latency.table": _is_str,
    "latency.batch_size": _COUNT,
    "latency.dtype": _non_empty_str,
    "latency.repeats": _COUNT,
    "latency.statistic": _one_of("median", "min"),
    "latency.clock": _one_of("wall", "cpu"),
    "latency.cpu_threads": _NON_NEG_INT,
    # retraining
    "retrain.enabled": _is_bool,
    "retrain.epochs": _COUNT,
    "retrain.batch_size": _COUNT,
    "retrain.channels": _COUNT,
    "retrain.layers": _COUNT,
    "retrain.cells_per_stage": _COUNT,
    "retrain.lr": _RATE,
    "retrain.lr_min": _NON_NEG,
    "retrain.momentum": _MOMENTUM,
    "retrain.nesterov": _is_bool,
    "retrain.weight_decay": _NON_NEG,
    "retrain.grad_clip": _RATE,
    "retrain.drop_path": _MOMENTUM,
    "retrain.label_smoothing": _MOMENTUM,
    "retrain.augment.shift": _NON_NEG_INT,
    "retrain.augment.crop_padding": _NON_NEG_INT,
    "retrain.augment.flip": _is_bool,
    "retrain.augment.cutout": _NON_NEG_INT,
}

# Keys every run of a command reads; strict validation requires them.
_REQUIRED = {
    "search": ("space.name", "data.name", "search.strategy", "search.epochs",
               "search.batch_size", "retrain.enabled"),
    "compare": ("space.name", "data.name", "search.epochs", "search.batch_size"),
    "train": ("space.name", "data.name", "retrain.epochs", "retrain.batch_size"),
    "info": ("space.name",),
}
# The sections a command reads at all (the others are not its business: a
# ``jnas train`` does not care that search.epochs is 0).
_SECTIONS = {
    "search": ("seed", "data", "space", "model", "search", "evolution", "fbnet", "latency",
               "retrain"),
    "compare": ("seed", "data", "space", "model", "search", "evolution", "fbnet", "latency",
                "retrain"),
    "train": ("seed", "data", "space", "model", "retrain"),
    "info": ("data", "space", "model"),
}
