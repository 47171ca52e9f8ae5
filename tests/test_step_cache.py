"""Saved traced steps (jnas/utils/step_cache.py): a resumed search runs the saved program, untraced."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnas.utils.step_cache import cached_jit
from tests.tiny_search import reference_run

traces: list[int] = []


def step(carry, x):
  """A step with a typed PRNG key in its carry and a dict of metrics, like the search steps."""
  traces.append(1)  # runs only while tracing
  key, sub = jax.random.split(carry["key"])
  w = carry["w"] - 0.1 * x.mean(0) + 0.01 * jax.random.normal(sub, carry["w"].shape)
  return {"w": w, "key": key, "n": carry["n"] + 1}, {"loss": jnp.sum(w ** 2)}


def carry0():
  return {"w": jnp.arange(3.0), "key": jax.random.key(7), "n": jnp.int32(0)}


def run(fn, steps=3):
  c, out = carry0(), []
  for i in range(steps):
    c, m = fn(c, jnp.full((4, 3), float(i)))
    out.append(float(m["loss"]))
  return c, out


def test_saved_step_is_reused_without_tracing_and_matches_jit(tmp_path, caplog):
  path = tmp_path / "traced" / "step.jaxexport"
  traces.clear()
  ref_c, ref = run(jax.jit(step))
  assert len(traces) == 1
  traces.clear()
  c1, first = run(cached_jit(step, path, tag="a", donate_argnums=(0,)))
  assert path.exists() and len(traces) == 1
  traces.clear()
  # A new process would build a new cached_jit: it finds the file and does not trace.
  with caplog.at_level("INFO", logger="jnas.utils.step_cache"):
    c2, second = run(cached_jit(step, path, tag="a", donate_argnums=(0,)))
  assert traces == []
  assert "running the saved step" in caplog.text
  assert first == ref and second == ref
  # Fresh (uncommitted) arguments on the first call, a step's committed outputs after: the saved
  # program is lowered (and compiled) once, not once for each placement.
  lowered = []

  def listen(event, seconds, **kw):
    if event == "/jax/core/compile/jaxpr_to_mlir_module_duration" and "call" in kw.get("fun_name", ""):
      lowered.append(kw["fun_name"])

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    run(cached_jit(step, path, tag="a", donate_argnums=(0,)))
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert len(lowered) == 1, lowered
  for c in (c1, c2):
    np.testing.assert_array_equal(c["w"], ref_c["w"])
    np.testing.assert_array_equal(jax.random.key_data(c["key"]), jax.random.key_data(ref_c["key"]))
    assert jax.dtypes.issubdtype(c["key"].dtype, jax.dtypes.prng_key) and int(c["n"]) == 3


def test_another_tag_or_a_torn_file_traces_again_and_replaces_it(tmp_path):
  path = tmp_path / "step.jaxexport"
  run(cached_jit(step, path, tag="a"))
  traces.clear()
  run(cached_jit(step, path, tag="b"))  # e.g. another config in the same place
  assert len(traces) == 1
  path.write_bytes(b"torn")
  traces.clear()
  with pytest.warns(RuntimeWarning, match="unreadable saved step"):
    _, out = run(cached_jit(step, path, tag="b"))
  assert len(traces) == 1 and out == run(jax.jit(step))[1]
  traces.clear()
  run(cached_jit(step, path, tag="b"))
  assert traces == []


def test_an_unwritable_place_warns_and_still_runs(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.warns(RuntimeWarning, match="could not be saved"):
    _, out = run(cached_jit(step, blocker / "step.jaxexport"))
  assert out == run(jax.jit(step))[1]


def test_other_shapes_fall_back_to_a_plain_jit(tmp_path):
  fn = cached_jit(step, tmp_path / "step.jaxexport")
  run(fn)
  c, m = fn({"w": jnp.zeros(5), "key": jax.random.key(0), "n": jnp.int32(0)}, jnp.ones((2, 5)))
  assert c["w"].shape == (5,) and np.isfinite(float(m["loss"]))


def test_a_step_that_cannot_be_saved_warns_and_still_runs(tmp_path):
  def with_callback(c, x):
    jax.debug.callback(lambda v: None, x.sum())  # host callbacks cannot be exported
    return c + x.sum(), {"s": x.sum()}

  fn = cached_jit(with_callback, tmp_path / "cb.jaxexport")
  with pytest.warns(RuntimeWarning, match="cannot be saved"):
    c, m = fn(jnp.float32(1.0), jnp.ones(3))
  assert float(c) == 4.0 and not (tmp_path / "cb.jaxexport").exists()


def test_the_search_loop_saves_its_step_beside_the_checkpoints():
  assert (reference_run() / "traced" / "search_step.jaxexport").stat().st_size > 0
