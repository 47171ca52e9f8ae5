"""Per-compilation XLA options (jnas/utils/xla.py): when they apply, and that results do not change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnas.utils import xla


def test_auto_turns_library_fusions_off_for_darts_on_1d_or_with_native_kernels():
  assert xla.compiler_options("auto", ndim=2, native=False) is None
  assert xla.compiler_options("auto", ndim=1, fusions_slower=False) is None
  assert xla.compiler_options("auto", ndim=2, fusions_slower=False, native=True) is None
  assert xla.compiler_options("auto", ndim=2, native=True) is not None
  assert xla.compiler_options("on", ndim=1) is None
  off = xla.compiler_options("auto", ndim=1)
  assert off == xla.compiler_options("off", ndim=2) == {"xla_cpu_experimental_ynn_fusion_type": ""}
  with pytest.raises(ValueError, match="unknown library_fusions 'fast'"):
    xla.compiler_options("fast", ndim=1)


def test_an_unknown_option_is_detected_not_passed():
  assert not xla._known_option("xla_cpu_no_such_option_in_any_jaxlib", "")


def test_results_are_the_same_with_library_fusions_off():
  def f(w, x):
    return jnp.sum(jax.nn.relu(x @ w) * 2.0 + 1.0, axis=0)

  w = jax.random.normal(jax.random.key(0), (16, 8))
  x = jax.random.normal(jax.random.key(1), (64, 16))
  default = jax.jit(f)(w, x)
  off = jax.jit(f, compiler_options=xla.compiler_options("off", ndim=1))(w, x)
  np.testing.assert_allclose(off, default, rtol=1e-5, atol=1e-5)
