"""Property-based fuzz of everything that parses what a user typed.

NAS-Bench-201 architecture strings, DARTS genotype JSON and ``--config.KEY=VALUE``
overrides must either parse to something valid or raise ``ValueError`` (the
CLI's one-line error type; ``ConfigError`` is one): never ``TypeError``,
``OverflowError``, ``RecursionError``, ``KeyError`` or any other traceback.
Hypothesis shrinks a failure to its smallest input, so a failing case reads
as the bug report.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jnas.config import ConfigError, apply_overrides, load_config  # noqa: E402
from jnas.spaces.darts import GENOTYPES, PRIMITIVES, DartsSpace  # noqa: E402
from jnas.spaces.nb201 import NB201_OPS, NB201Space  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
NB = NB201Space()
DS = DartsSpace()


def _one_line_error(e: BaseException) -> None:
  assert isinstance(e, ValueError), f"{type(e).__name__}: {e}"
  assert str(e).strip(), "an empty message"


# ---------------------------------------------------------------------------
# NAS-Bench-201 strings
# ---------------------------------------------------------------------------

# Pieces of the format, so most examples are near-valid strings rather than noise.
_piece = st.one_of(
    st.sampled_from(NB201_OPS + ("nor_conv_5x5", "", "none ", "NONE")),
    st.sampled_from(["|", "~", "+", "~0", "~1", "~2", "~3", "~-1", "~1.0", "~01", " ", "\n", "||"]),
    st.text(alphabet=string.printable, max_size=4),
)
_nb201_like = st.lists(_piece, max_size=24).map("".join)


@st.composite
def _nb201_mutated(draw) -> str:
  """A valid string with one or two of its tokens replaced."""
  ops = draw(st.lists(st.sampled_from(NB201_OPS), min_size=6, max_size=6))
  text = NB.format(NB.decode_indices([NB201_OPS.index(o) for o in ops]))
  for _ in range(draw(st.integers(1, 2))):
    i = draw(st.integers(0, len(text)))
    j = draw(st.integers(i, min(len(text), i + 6)))
    text = text[:i] + draw(st.text(alphabet="|~+0123 abcnoe_", max_size=5)) + text[j:]
  return text


@FUZZ
@given(st.one_of(_nb201_like, _nb201_mutated(), st.text(max_size=80)))
def test_nb201_strings_parse_or_raise_value_error(text):
  try:
    g = NB.parse(text)
  except Exception as e:  # noqa: BLE001 - the property is about every exception type
    _one_line_error(e)
    return
  # Whatever parses is a cell of the space and prints back to the canonical string.
  assert NB.parse(NB.format(g)) == g
  assert len(g.ops) == NB.num_edges


_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_json = st.recursive(_json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=25)


@FUZZ
@given(st.one_of(_json, st.fixed_dictionaries({"arch": st.one_of(_nb201_like, _json)}),
                 st.fixed_dictionaries({"space": _json, "arch": _nb201_mutated()})))
def test_nb201_genotype_json_parses_or_raises_value_error(data):
  for parse in (NB.genotype_from_json, lambda d: NB.genotype_loads(json.dumps(d))):
    try:
      g = parse(data)
    except Exception as e:  # noqa: BLE001
      _one_line_error(e)
      continue
    assert NB.genotype_from_json(NB.genotype_to_json(g)) == g


# ---------------------------------------------------------------------------
# DARTS genotype JSON
# ---------------------------------------------------------------------------

_op = st.one_of(st.sampled_from(PRIMITIVES), _json_scalar)
_inp = st.one_of(st.integers(-2, 7), st.integers(-10**20, 10**20), _json_scalar,
                 st.sampled_from(["1", 1.0, 1.7, True, float("nan"), float("inf")]))
_pair = st.one_of(st.tuples(_op, _inp).map(list), st.lists(_json_scalar, max_size=3),
                  st.text(max_size=3), _json_scalar)
_cell = st.one_of(st.lists(_pair, min_size=7, max_size=9), st.lists(_pair, max_size=3),
                  _json_scalar)
_concat = st.one_of(st.lists(st.integers(-1, 7), max_size=5), _json)


@st.composite
def _darts_mutated(draw) -> dict:
  """A published genotype's JSON with a few fields replaced by fuzz."""
  g = DS.genotype_to_json(GENOTYPES[draw(st.sampled_from(sorted(GENOTYPES)))])
  for _ in range(draw(st.integers(1, 3))):
    what = draw(st.sampled_from(["pair", "op", "input", "cell", "concat", "space", "drop"]))
    ct = draw(st.sampled_from(["normal", "reduce"]))
    k = draw(st.integers(0, 7))
    # An earlier change may have replaced or dropped the cell: edit entries of intact ones only.
    cell = g.get(ct)
    entry = cell[k] if isinstance(cell, list) and k < len(cell) else None
    if what == "pair" and entry is not None:
      cell[k] = draw(_pair)
    elif what == "op" and isinstance(entry, list) and entry:
      entry[0] = draw(_op)
    elif what == "input" and isinstance(entry, list) and len(entry) > 1:
      entry[1] = draw(_inp)
    elif what == "cell":
      g[ct] = draw(_cell)
    elif what == "concat":
      g[f"{ct}_concat"] = draw(_concat)
    elif what == "space":
      g["space"] = draw(_json)
    elif what == "drop":
      g.pop(draw(st.sampled_from(sorted(g))), None)
  return g


@FUZZ
@given(st.one_of(_darts_mutated(), _json,
                 st.fixed_dictionaries({"normal": _cell, "reduce": _cell},
                                       optional={"normal_concat": _concat,
                                                 "reduce_concat": _concat})))
def test_darts_genotype_json_parses_or_raises_value_error(data):
  try:
    text = json.dumps(data)
  except ValueError:
    text = None
  parsers = [DS.genotype_from_json] + ([lambda _: DS.genotype_loads(text)] if text else [])
  for parse in parsers:
    try:
      g = parse(data)
    except Exception as e:  # noqa: BLE001
      _one_line_error(e)
      continue
    # Whatever parses is what the JSON says, nothing rounded or split ("s1" is not ("s", 1),
    # 1.7 is not 1), and a DARTS cell: it encodes and round-trips through its own JSON.
    out = DS.genotype_to_json(g)
    for ct in ("normal", "reduce"):
      assert [list(p) for p in data[ct]] == out[ct]
      assert all(type(i) is int for _, i in data[ct])
      concat = data.get(f"{ct}_concat")
      assert concat is None or list(concat) == out[f"{ct}_concat"]
      assert out[f"{ct}_concat"], "an empty concat"
      assert any(op != "none" for op, _ in out[ct]), "an all-none cell"
      for node in range(DS.num_nodes):
        inputs = [i for _, i in out[ct][2 * node:2 * node + 2]]
        assert len(set(inputs)) == 2, f"node {node} reads {inputs}"
    DS.genotype_to_encoding(g)
    assert DS.genotype_from_json(out) == g


@FUZZ
@given(st.one_of(st.text(max_size=60), st.binary(max_size=40).map(
    lambda b: b.decode("latin-1")), st.integers(1, 3000).map(lambda n: "[" * n + "]" * (n % 7))))
def test_genotype_text_that_is_not_json(text):
  for space in (NB, DS):
    try:
      space.genotype_loads(text)
    except Exception as e:  # noqa: BLE001
      _one_line_error(e)


# ---------------------------------------------------------------------------
# --config.KEY=VALUE
# ---------------------------------------------------------------------------

_CONFIGS = {name: load_config(str(ROOT / "experiments" / f"{name}.py"))
            for name in ("darts_mnist1d", "nb201_mnist1d", "fbnet_mnist1d", "spos_mnist1d")}


def _keys(cfg, prefix=""):
  for k, v in cfg.items():
    if hasattr(v, "items"):
      yield from _keys(v, f"{prefix}{k}.")
    yield f"{prefix}{k}"


_KEYS = sorted({k for c in _CONFIGS.values() for k in _keys(c)}
               | {"search.mitigations", "search.prune_epochs", "search.partial_channels"})
_key = st.one_of(st.sampled_from(_KEYS), st.text(alphabet=string.ascii_lowercase + "._", max_size=20),
                 st.text(max_size=12))
_value = st.one_of(
    st.sampled_from(["0", "-1", "1" + "0" * 400, "1e400", "-1e400", "nan", "inf", "-inf", "1" * 5000, "10**400",
                     "None", "none", "true", "(1,", "[1, [2]]", "()", "[]", "{}", "'x'", "1j",
                     "(20,)", "fairdarts,nope", "spos", "gdas", "1_000", "0x10", "٣"]),
    st.integers(-10**40, 10**40).map(str), st.floats().map(repr), st.text(max_size=30),
    st.lists(st.integers(-5, 99), max_size=4).map(lambda xs: ",".join(map(str, xs))),
    st.integers(1, 400).map(lambda n: "(" * n))


@FUZZ
@given(st.sampled_from(sorted(_CONFIGS)), st.lists(st.tuples(_key, _value), min_size=1,
                                                   max_size=3))
# Found before: an int too large for a float field raised OverflowError.
@example("darts_mnist1d", [("search.w_lr", "1" + "0" * 400)])
@example("darts_mnist1d", [("search.prune_epochs", "1" + "0" * 400)])
@example("fbnet_mnist1d", [("space.stages", "((1" + "0" * 400 + ", 1, 1),)")])
def test_overrides_apply_or_raise_config_error(name, pairs):
  from jnas.validate import validate_config

  overrides = [f"{k}={v}" for k, v in pairs]
  try:
    cfg = apply_overrides(_CONFIGS[name], overrides)
  except Exception as e:  # noqa: BLE001
    assert isinstance(e, ConfigError), f"{type(e).__name__}: {e}"
    return
  # What applies must then validate, or be refused in one line, for every command.
  for command in ("search", "train", "info"):
    try:
      validate_config(cfg, command)
    except Exception as e:  # noqa: BLE001
      _one_line_error(e)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["--config.", "--config.search.epochs", "--config.=",
                                           "--config.a=b=c", "-", "--", "x"]),
                          st.text(max_size=15),
                          st.builds(lambda k, v: f"--config.{k}={v}", _key, _value)),
                max_size=6))
def test_split_overrides_never_raises(extras):
  from jnas.cli import split_overrides

  overrides, unknown = split_overrides(extras)
  assert all("=" in o for o in overrides)
  assert len(overrides) + len(unknown) <= len(extras)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_key, _value), min_size=1, max_size=2))
def test_cli_overrides_end_in_exit_2_or_reach_the_run(tmp_path, monkeypatch, capsys, pairs):
  """Through ``jnas search`` itself: exit 2 with one line, or a config the run accepts."""
  import sys
  import types

  import jnas
  from jnas import cli

  reached = []
  fake = types.ModuleType("jnas.run")
  fake.search = lambda config, workdir: reached.append(config) or {}
  monkeypatch.setitem(sys.modules, "jnas.run", fake)
  monkeypatch.setattr(jnas, "run", fake, raising=False)
  wd = tmp_path / "never"
  rc = cli.main(["search", "--config", str(ROOT / "experiments/darts_mnist1d.py"),
                 "--workdir", str(wd)] + [f"--config.{k}={v}" for k, v in pairs])
  err = capsys.readouterr().err
  if rc == 0:
    assert reached
  else:
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("jnas: error: "), (rc, err)
  assert not wd.exists()
