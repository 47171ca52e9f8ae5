"""Loading experiment configs and applying command-line overrides.

Configs follow the flax-examples convention: a Python file defining
``get_config() -> ml_collections.ConfigDict``. Overrides are ``KEY=VALUE``
strings with dotted keys, parsed to the type of the field they replace.

Example:
    >>> cfg = load_config("configs/darts_digits.py")          # doctest: +SKIP
    >>> cfg = apply_overrides(cfg, ["search.epochs=4"])      # doctest: +SKIP
    >>> config_hash(cfg)                                      # doctest: +SKIP
    '3f1c2a9b0d4e'
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from typing import Any

import ml_collections

__all__ = [
    "ConfigError",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_hash",
    "SEARCH_OPTIONAL_DEFAULTS",
]

logger = logging.getLogger(__name__)

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NONE = frozenset({"none", "null"})

# Optional ``search`` keys and their defaults. Configs need not list them; an override such as
# ``search.mitigations=fairdarts`` adds the key to a config that lacks it, so existing configs
# keep their hash. Other unknown keys are still refused.
SEARCH_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "mitigations": "",  # comma list: fairdarts, drnas, darts_minus, beta_decay, sdarts_rs, pruning
    "fairdarts_w01": 10.0,  # weight of FairDARTS's zero-one loss
    "drnas_anchor": 1e-3,  # weight of DrNAS's anchor ||beta - 1||^2 (0: off)
    "darts_minus_beta0": 1.0,  # DARTS-'s auxiliary skip weight at step 0 (linear to 0)
    "beta_decay_max": 50.0,  # beta-DARTS's regulariser weight at the end (linear from 0)
    "sdarts_eps_min": 0.03, "sdarts_eps_max": 0.3,  # SDARTS-RS's noise radius, min to max
    "prune_epochs": (),  # epochs after which each edge loses its weakest op; () = 1/3 and 2/3
    "early_stop_skips": 0,  # DARTS+: stop once the normal cell has this many skips (0: off)
    "partial_channels": 1,  # PC-DARTS's K: each edge's mixed op sees C/K channels (nb201 space)
    # Seconds between checkpoints at epoch ends (0: every epoch); steps per lax.scan (0: an epoch)
    "checkpoint_every_s": 60.0, "steps_per_call": 1,
    # Sample-based strategies (random, rea, topk, nsga2, reinforce, pnas, dpp_net; jnas/search/ask_tell.py)
    "estimator": "",  # what scores their candidates: table, scratch, supernet or predictor
    "predictor_base": "table",  # the predictor's measuring estimator (table or scratch),
    "predictor_warmup": 20,  # what it measures first, and its optimism:
    "predictor_kappa": 1.0,  # it measures when mean + kappa * spread >= the best so far
    "table": "",  # the benchmark CSV of the table estimator
    "table_columns": "arch_str,val_acc,train_seconds",  # ARCH,SIGNAL,COST[,REPORT] columns
    "evals": 0,  # stop after this many evaluations (0: no limit)
    "budget_s": 0.0,  # stop once this many seconds are charged (0: no limit)
    "scratch_epochs": 3,  # epochs each candidate trains with the scratch estimator
    "objective": "",  # nsga2's / dpp_net's cost: params, flops, latency, a table column ("": COST)
    "strategy_settings": "",  # the strategy's own settings, e.g. population_size=20,sample_size=5
    "prefilter": "",  # a zero-cost proxy (nb201): only candidates in its top prefilter_keep
    "prefilter_keep": 0.5, "prefilter_pool": 1000,  # fraction of prefilter_pool random cells run
    "few_shot": "",  # SPOS: split the supernet on encoding edge KEY:EDGE (e.g. cell:0); "" = one-shot
    "few_shot_warmup": 0.5,  # fraction of SPOS steps trained one-shot before the split
    "pool_sampling": "uniform",  # SPOS's paths: uniform encodings, or unique (nb201: per function)
    "finalists": 0, "finalist_estimator": "table",  # SPOS: measure the K best by shared weights
    "supernet_from": "",  # SPOS: search this finished run's supernet, training none (train once)
}
# Optional keys by group, the same way (retrain.steps_per_call: the retraining's steps per scan).
_OPTIONAL_DEFAULTS = {"search": SEARCH_OPTIONAL_DEFAULTS, "retrain": {"steps_per_call": 1}}


class ConfigError(ValueError):
    """A config file or override is invalid; the message is a single line.

    Example:
        >>> try:
        ...     load_config("/nonexistent/config.py")
        ... except ConfigError as e:
        ...     print(e)
        config file not found: /nonexistent/config.py
    """


# ---- Loading. ----


def _split_config_arg(path: str) -> tuple[str, str | None]:
    """Split flax-style ``file.py:ARG`` unless the whole string is a file."""
    if os.path.exists(path) or ":" not in path:
        return path, None
    file_part, arg = path.rsplit(":", 1)
    # A Windows drive letter ("C:\\x.py") must not be mistaken for an argument.
    if not file_part or os.sep in arg or (os.altsep and os.altsep in arg):
        return path, None
    return file_part, arg


def load_config(path: str) -> ml_collections.ConfigDict:
    """Import a Python config file by path and return its ``get_config()``.

    The file's directory is on ``sys.path`` while it is imported and while
    ``get_config`` runs, so it may import sibling config files. A flax-style
    ``path.py:ARG`` calls ``get_config(ARG)``.

    Args:
        path: path to a ``.py`` file defining ``get_config()``.

    Returns:
        The ConfigDict returned by ``get_config`` (a plain dict is converted).

    Raises:
        ConfigError: the file is missing, fails to import, lacks
            ``get_config``, or ``get_config`` returns something else.

    Example:
        >>> cfg = load_config("configs/darts_digits.py")   # doctest: +SKIP
        >>> cfg.search.epochs                               # doctest: +SKIP
        50
    """
    file_path, arg = _split_config_arg(os.fspath(path))
    if not os.path.isfile(file_path):
        raise ConfigError(f"config file not found: {file_path}")
    abs_path = os.path.abspath(file_path)
    directory = os.path.dirname(abs_path)

    # A per-path module name keeps two configs with the same basename (e.g.
    # two "default.py" in different folders) from shadowing each other.
    digest = hashlib.sha1(abs_path.encode()).hexdigest()[:10]
    stem = os.path.splitext(os.path.basename(abs_path))[0]
    safe_stem = "".join(ch if ch.isalnum() else "_" for ch in stem)
    module_name = f"_jnas_config_{safe_stem}_{digest}"

    loader = importlib.machinery.SourceFileLoader(module_name, abs_path)
    spec = importlib.util.spec_from_loader(module_name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)

    modules_before = set(sys.modules)
    sys.path.insert(0, directory)
    sys.modules[module_name] = module
    try:
        try:
            loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - any import failure is a config error
            sys.modules.pop(module_name, None)
            raise ConfigError(
                f"error importing config file {file_path}: {type(e).__name__}: "
                f"{_one_line(str(e))}"
            ) from e
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise ConfigError(f"config file {file_path} does not define get_config()")
        try:
            config = get_config(arg) if arg is not None else get_config()
        except Exception as e:  # noqa: BLE001
            raise ConfigError(
                f"get_config() in {file_path} failed: {type(e).__name__}: "
                f"{_one_line(str(e))}"
            ) from e
    finally:
        try:
            sys.path.remove(directory)
        except ValueError:
            pass
        # Sibling modules imported from this folder are cached under plain
        # names ("base"); drop them so a config in another folder importing
        # its own "base" does not silently get this one.
        for name in set(sys.modules) - modules_before:
            if name == module_name:
                continue
            mod_file = getattr(sys.modules.get(name), "__file__", None) or ""
            if mod_file and os.path.dirname(os.path.abspath(mod_file)) == directory:
                del sys.modules[name]

    if isinstance(config, ml_collections.FrozenConfigDict):
        config = ml_collections.ConfigDict(config)
    elif isinstance(config, dict):
        config = ml_collections.ConfigDict(config)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() in {file_path} returned {type(config).__name__}, "
            "expected ml_collections.ConfigDict"
        )
    logger.debug("loaded config %s", abs_path)
    return config


# ---- Overrides. ----


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _keys_of(group: ml_collections.ConfigDict) -> list[str]:
    return sorted(str(k) for k in group.keys())


def _unknown_key_error(full_key: str, parent: str, missing: str, group) -> ConfigError:
    keys = _keys_of(group)
    prefix = f"{parent}." if parent else ""
    matches = difflib.get_close_matches(missing, keys, n=1)
    hint = f"did you mean '{prefix}{matches[0]}'? " if matches else ""
    where = f"keys under '{parent}'" if parent else "top-level keys"
    listing = ", ".join(keys) if keys else "(none)"
    return ConfigError(f"unknown config key '{full_key}' ({hint}{where}: {listing})")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(text)


def _parse_int(text: str) -> int:
    value = _literal(text.strip())
    # bool is an int subclass, but "True" for an int field is almost surely a typo.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(text)


def _parse_float(text: str) -> float:
    low = text.strip().lower()
    if low in {"nan", "inf", "+inf", "-inf", "infinity", "-infinity"}:
        return float(low)
    value = _literal(text.strip())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(text)


def _coerce_element(value: Any, elem_type: type | None) -> Any:
    if elem_type is None:
        return value
    if elem_type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)):
            return _parse_bool(str(value))
        raise ValueError(value)
    if elem_type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(value)
    if elem_type is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(value)
    if elem_type is str:
        return value if isinstance(value, str) else str(value)
    return value


def _parse_sequence(text: str, current: Any, seq_type: type) -> tuple | list:
    stripped = text.strip()
    value = _literal(stripped)
    if isinstance(value, (tuple, list)):
        items = list(value)
    elif value is stripped:
        # Not a Python literal: treat as a bare comma list such as "conv,skip"
        # or "(conv, skip)", since shells make quoting each item painful.
        inner = stripped
        if len(inner) >= 2 and inner[0] + inner[-1] in ("()", "[]"):
            inner = inner[1:-1]
        parts = [p.strip() for p in inner.split(",")]
        if parts and parts[-1] == "":
            parts = parts[:-1]
        items = [_literal(p) for p in parts]
    else:
        items = [value]

    elem_types = {type(x) for x in current} if current else set()
    elem_type = next(iter(elem_types)) if len(elem_types) == 1 else None
    if elem_type not in (bool, int, float, str):
        elem_type = None
    items = [_coerce_element(x, elem_type) for x in items]
    return tuple(items) if issubclass(seq_type, tuple) else list(items)


def _parse_free(text: str) -> Any:
    """Parse a value for a field with no known type (currently ``None``)."""
    low = text.strip().lower()
    if low in _NONE:
        return None
    if low in ("true", "false"):
        return low == "true"
    return _literal(text.strip())


def _type_name(field_type: type, current: Any) -> str:
    if field_type in (tuple, list) and current:
        elem_types = {type(x).__name__ for x in current}
        if len(elem_types) == 1:
            return f"{field_type.__name__} of {elem_types.pop()}"
    return field_type.__name__


def _parse_value(text: str, field_type: type, current: Any) -> Any:
    """Parse ``text`` to ``field_type``; raises ValueError when impossible."""
    nullable = current is None
    if nullable and text.strip().lower() in _NONE:
        return None
    if field_type is type(None):
        return _parse_free(text)
    if field_type is bool:
        return _parse_bool(text)
    if field_type is int:
        return _parse_int(text)
    if field_type is float:
        return _parse_float(text)
    if field_type is str:
        return text
    if issubclass(field_type, (tuple, list)):
        return _parse_sequence(text, current, field_type)
    # Anything else (enums, dtypes, ...) can only be matched as a literal.
    value = _literal(text.strip())
    if isinstance(value, field_type):
        return value
    raise ValueError(text)


def _resolve(config: ml_collections.ConfigDict, key: str):
    """Return ``(group, leaf_name)`` for a dotted key or raise ConfigError."""
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"invalid config key '{key}'")
    group = config
    for i, part in enumerate(parts[:-1]):
        parent = ".".join(parts[:i])
        if part not in group:
            raise _unknown_key_error(key, parent, part, group)
        child = group[part]
        if not isinstance(child, ml_collections.ConfigDict):
            here = ".".join(parts[: i + 1])
            raise ConfigError(
                f"unknown config key '{key}' ('{here}' is a value, not a group of keys)"
            )
        group = child
    leaf = parts[-1]
    optional = _OPTIONAL_DEFAULTS.get(".".join(parts[:-1]), {})
    if leaf not in group and leaf in optional:
        with group.unlocked():
            group[leaf] = optional[leaf]
    if leaf not in group:
        raise _unknown_key_error(key, ".".join(parts[:-1]), leaf, group)
    return group, leaf


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: list[str]
) -> ml_collections.ConfigDict:
    """Return a locked copy of ``config`` with ``KEY=VALUE`` overrides applied.

    Each VALUE is parsed to the type of the field it replaces: bools accept
    ``true/false/1/0/yes/no`` (any case), float fields accept ints, tuple and
    list fields accept ``(1,2,3)``, ``[1,2,3]`` or ``1,2,3``, and fields whose
    value is ``None`` accept ``none``/``null`` or any Python literal (falling
    back to a plain string). Overrides are applied in order, so the last one
    for a key wins. ``config`` itself is not modified.

    Args:
        config: the base config.
        overrides: strings such as ``"search.epochs=4"``.

    Returns:
        A new, locked ConfigDict.

    Raises:
        ConfigError: malformed override, unknown key (the message suggests
            the closest key and lists the valid ones), or unparsable value.

    Example:
        >>> import ml_collections
        >>> base = ml_collections.ConfigDict({"search": {"epochs": 50}})
        >>> apply_overrides(base, ["search.epochs=4"]).search.epochs
        4
    """
    if isinstance(config, ml_collections.FrozenConfigDict):
        new = ml_collections.ConfigDict(config)
    else:
        # deepcopy keeps FieldReferences shared within the copy, so an
        # override of a referenced field still propagates to its dependents.
        new = copy.deepcopy(config)

    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"invalid override '{item}': expected KEY=VALUE")
        key, text = item.split("=", 1)
        key = key.strip()
        group, leaf = _resolve(new, key)
        current = group[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ConfigError(
                f"config key '{key}' is a group, not a value; override one of its keys: "
                f"{', '.join(_keys_of(current))}"
            )
        field_type = group.get_type(leaf)
        try:
            value = _parse_value(text, field_type, current)
        except (ValueError, TypeError, OverflowError):
            # OverflowError: an int too large for a float field (float(10**400)).
            raise ConfigError(
                f"invalid value '{text}' for config key '{key}': expected "
                f"{_type_name(field_type, current)}"
            ) from None
        try:
            group[leaf] = value
        except (TypeError, ValueError, AttributeError, KeyError) as e:
            raise ConfigError(
                f"cannot set config key '{key}' to '{text}': {_one_line(str(e))}"
            ) from e
        logger.debug("config override %s=%r", key, value)

    new.lock()
    return new


# ---- Serialisation. ----


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_jsonable(v) for v in items]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and getattr(obj, "size", 1) == 1:
        try:
            return _jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    # Classes and functions (e.g. a dtype or an activation) are named rather
    # than repr'd, because a repr with a memory address would change the hash.
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(name, str):
        module = getattr(obj, "__module__", None)
        return f"{module}.{name}" if module else name
    return str(obj)


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """Convert a config to a JSON-serialisable nested dict.

    References are resolved, tuples become lists, numpy/jax scalars become
    Python numbers, and other objects become their qualified name or string.

    Example:
        >>> import ml_collections
        >>> config_to_dict(ml_collections.ConfigDict({"model": {"shape": (1, 2)}}))
        {'model': {'shape': [1, 2]}}
    """
    if isinstance(config, ml_collections.ConfigDict):
        raw = config.to_dict()
    else:
        raw = dict(config)
    return _jsonable(raw)


def config_hash(config: ml_collections.ConfigDict) -> str:
    """Return a stable 12-hex-digit hash of the config's JSON form.

    Equal configs hash equally regardless of key order or lock state, so a
    workdir can record it to detect whether a resumed run is the "same run".

    Example:
        >>> import ml_collections
        >>> a = ml_collections.ConfigDict({"x": 1, "y": (1, 2)})
        >>> b = ml_collections.ConfigDict({"y": [1, 2], "x": 1})
        >>> config_hash(a) == config_hash(b)
        True
    """
    text = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
