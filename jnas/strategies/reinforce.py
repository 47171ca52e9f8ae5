"""An RL controller trained with REINFORCE (Zoph & Le, ICLR 2017), as an ask/tell strategy.

The controller is a recurrent policy (a Flax NNX LSTM) that emits one decision
per step of a search space's **integer form** (``space.index_sizes()``: one
entry per decision with its number of values; see
:class:`jnas.spaces.base.SearchSpace`). For the NAS-Bench-201 cell the steps
are the 6 edges (5 ops each); for the DARTS cell they are, per node, the
decisions the space's integer form defines (which inputs, which ops). Step
``t`` reads the embedding of the decision taken at step ``t - 1`` (each step
has its own embedding rows) and has its own softmax head; values beyond a
step's size are masked out, so steps of different sizes share one LSTM.

``ask`` samples a batch of decision sequences (``int32 [batch, steps]``, the
integer form; ``space.decode_indices`` turns a row into a genotype) and
``tell`` takes one REINFORCE step with Adam on
``-(R - b) * log p(a) - entropy_weight * H``, where ``b`` is an exponential
moving average of past rewards. Both are pure functions of a pytree state, so
they jit, and a run is reproducible from its key.

Example:
  >>> from jnas.spaces.nb201 import NB201Space
  >>> space = NB201Space()
  >>> strategy = reinforce(space.index_sizes(), batch_size=4)
  >>> state = strategy.init(jax.random.key(0))
  >>> state, arch = strategy.ask(state)          # int32 [4, 6]
  >>> rewards = jnp.ones(4)                       # any scorer's accuracies
  >>> state = strategy.tell(state, arch, rewards)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jnas.strategies.base import AskTellStrategy

__all__ = ["Controller", "ReinforceState", "reinforce", "mnasnet_reward", "sizes_of"]


def sizes_of(space_or_sizes: Any) -> tuple[int, ...]:
  """Per-step candidate counts: ``space.index_sizes()`` or the given sequence.

  Example:
    >>> sizes_of((5, 5, 3))
    (5, 5, 3)
  """
  if hasattr(space_or_sizes, "index_sizes"):
    sizes = tuple(int(s) for s in space_or_sizes.index_sizes())
  else:
    sizes = tuple(int(s) for s in space_or_sizes)
  if not sizes or min(sizes) < 1:
    raise ValueError(f"a decision sequence needs at least one step and every step at least one "
                     f"value, got sizes {sizes}")
  return sizes


class Controller(nnx.Module):
  """The recurrent policy: an LSTM cell, per-step embeddings and per-step softmax heads.

  Args:
    sizes: number of values of each decision step.
    hidden: LSTM width (Zoph & Le used 35 units; ENAS 64).
    tanh_constant: logits are squashed to ``c * tanh(l / c)`` (ENAS's trick that
      keeps the policy from collapsing early); ``None`` leaves them raw.

  Example:
    >>> c = Controller((5, 5, 3), hidden=16, rngs=nnx.Rngs(0))
    >>> logp, ent = c.log_prob(jnp.array([[0, 4, 2]]))
    >>> logp.shape
    (1,)
  """

  def __init__(self, sizes: Sequence[int], hidden: int = 64, *,
               tanh_constant: float | None = 2.5, rngs: nnx.Rngs):
    self.sizes = tuple(int(s) for s in sizes)
    self.tanh_constant = tanh_constant
    steps, width = len(self.sizes), max(self.sizes)
    # Token 0 starts the sequence; step t's value v is token offsets[t] + v + 1.
    self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.sizes)[:-1]]))
    self.embed = nnx.Embed(1 + sum(self.sizes), hidden, rngs=rngs)
    self.cell = nnx.LSTMCell(hidden, hidden, rngs=rngs)
    init = nnx.initializers.uniform(0.1)
    self.head_w = nnx.Param(init(rngs.params(), (steps, hidden, width)) - 0.05)
    self.head_b = nnx.Param(jnp.zeros((steps, width)))
    self.hidden = hidden

  def _logits(self, t: int, h: jax.Array) -> jax.Array:
    logits = h @ self.head_w[t] + self.head_b[t]
    if self.tanh_constant is not None:
      logits = self.tanh_constant * jnp.tanh(logits / self.tanh_constant)
    valid = jnp.arange(logits.shape[-1]) < self.sizes[t]
    return jnp.where(valid, logits, -1e9)

  def _run(self, batch: int, pick) -> tuple[jax.Array, jax.Array, jax.Array]:
    carry = (jnp.zeros((batch, self.hidden)), jnp.zeros((batch, self.hidden)))
    x = self.embed(jnp.zeros((batch,), jnp.int32))
    logp = ent = jnp.zeros((batch,))
    out = []
    # The sequence is short and its steps differ in size, so a Python loop
    # (unrolled once at trace time) is simpler than a scan with padding.
    for t in range(len(self.sizes)):
      carry, h = self.cell(carry, x)
      log_probs = jax.nn.log_softmax(self._logits(t, h))
      a = pick(t, log_probs)
      logp = logp + jnp.take_along_axis(log_probs, a[:, None], axis=-1)[:, 0]
      probs = jnp.exp(log_probs)
      ent = ent - jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)
      out.append(a)
      x = self.embed(self.offsets[t] + a + 1)
    return jnp.stack(out, axis=1).astype(jnp.int32), logp, ent

  def sample(self, key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``batch`` decision sequences ``int32 [batch, steps]``, their log-probs and entropies."""
    keys = jax.random.split(key, len(self.sizes))
    return self._run(batch, lambda t, lp: jax.random.categorical(keys[t], lp))

  def log_prob(self, decisions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log-probability and entropy (summed over steps) of given decision sequences."""
    decisions = jnp.asarray(decisions, jnp.int32)
    _, logp, ent = self._run(decisions.shape[0], lambda t, lp: decisions[:, t])
    return logp, ent

  def greedy(self) -> jax.Array:
    """The most likely decision at every step (arg-max decoding), ``int32 [steps]``."""
    return self._run(1, lambda t, lp: jnp.argmax(lp, axis=-1))[0][0]


class ReinforceState(NamedTuple):
  """Controller weights, Adam state, reward baseline, RNG key and step count."""

  params: Any
  opt_state: Any
  baseline: jax.Array
  has_baseline: jax.Array
  key: jax.Array
  step: jax.Array


def reinforce(space_or_sizes: Any, *, batch_size: int = 1, hidden: int = 64,
              learning_rate: float = 0.01, entropy_weight: float = 1e-3,
              baseline_decay: float = 0.9, tanh_constant: float | None = 2.5
              ) -> AskTellStrategy:
  """REINFORCE with a moving-average baseline and an entropy bonus (Zoph & Le, 2017).

  Args:
    space_or_sizes: a search space (its ``index_sizes()``) or the sizes.
    batch_size: architectures per ``ask`` (Zoph & Le sampled many in parallel;
      on a tabular benchmark one per step, as NAS-Bench-201 did, is typical).
    hidden: LSTM width.
    learning_rate: Adam step size.
    entropy_weight: weight of the entropy bonus (keeps the policy exploring).
    baseline_decay: the baseline is ``decay * b + (1 - decay) * mean(R)``; the
      first batch sets it to its mean reward.
    tanh_constant: logit squashing (see :class:`Controller`).

  Returns:
    An :class:`AskTellStrategy`: ``init(key)``, ``ask(state) -> (state, int32
    [batch_size, steps])`` and ``tell(state, decisions, rewards)``, all pure and
    jittable. ``controller_policy(sizes, state).greedy()`` decodes the
    policy's current most likely architecture.

  Example:
    >>> s = reinforce((5,) * 6, batch_size=2)
    >>> st = s.init(jax.random.key(0))
    >>> st, d = jax.jit(s.ask)(st)
    >>> st = jax.jit(s.tell)(st, d, jnp.array([0.5, 0.9]))
  """
  sizes = sizes_of(space_or_sizes)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not 0.0 <= baseline_decay < 1.0:
    raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
  make = lambda key: Controller(sizes, hidden, tanh_constant=tanh_constant,
                                rngs=nnx.Rngs(params=key))
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: make(jax.random.key(0))))
  tx = optax.adam(learning_rate)

  def init(key: jax.Array) -> ReinforceState:
    k_init, k_run = jax.random.split(key)
    params = nnx.state(make(k_init), nnx.Param)
    return ReinforceState(params, tx.init(params), jnp.zeros(()), jnp.zeros((), bool), k_run,
                          jnp.zeros((), jnp.int32))

  def ask(state: ReinforceState) -> tuple[ReinforceState, jax.Array]:
    key, sub = jax.random.split(state.key)
    decisions, _, _ = nnx.merge(graphdef, state.params).sample(sub, batch_size)
    return state._replace(key=key), decisions

  def tell(state: ReinforceState, decisions: jax.Array, rewards: jax.Array) -> ReinforceState:
    rewards = jnp.asarray(rewards, jnp.float32).reshape(-1)
    mean_r = jnp.mean(rewards)
    baseline = jnp.where(state.has_baseline, state.baseline, mean_r)
    advantage = jax.lax.stop_gradient(rewards - baseline)

    def loss_fn(params):
      logp, ent = nnx.merge(graphdef, params).log_prob(decisions)
      return -jnp.mean(advantage * logp) - entropy_weight * jnp.mean(ent)

    grads = jax.grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    baseline = baseline_decay * baseline + (1.0 - baseline_decay) * mean_r
    return ReinforceState(params, opt_state, baseline, jnp.ones((), bool), state.key,
                          state.step + 1)

  return AskTellStrategy(init, ask, tell)


def controller_policy(space_or_sizes: Any, state: ReinforceState, *, hidden: int = 64,
                      tanh_constant: float | None = 2.5) -> Controller:
  """The controller module of a state (to decode greedily or inspect probabilities).

  ``hidden`` and ``tanh_constant`` must match the ones given to :func:`reinforce`.

  Example:
    >>> s = reinforce((5,) * 6)
    >>> st = s.init(jax.random.key(0))
    >>> controller_policy((5,) * 6, st).greedy().shape
    (6,)
  """
  sizes = sizes_of(space_or_sizes)
  graphdef, _ = nnx.split(nnx.eval_shape(
      lambda: Controller(sizes, hidden, tanh_constant=tanh_constant, rngs=nnx.Rngs(0))))
  return nnx.merge(graphdef, state.params)


def mnasnet_reward(accuracy: jax.Array, latency: jax.Array, target: float, *,
                   alpha: float = -0.07, beta: float = -0.07) -> jax.Array:
  """MnasNet's multi-objective reward ``ACC * (LAT / T) ** w`` (Tan et al., CVPR 2019).

  ``w = alpha`` when ``LAT <= T`` and ``beta`` otherwise. The paper's soft
  constraint uses ``alpha = beta = -0.07`` (a model twice as slow must be about
  5% more accurate to earn the same reward); ``alpha = 0, beta = -1`` is its
  hard constraint.

  Example:
    >>> float(mnasnet_reward(0.9, 2.0, 1.0))  # doctest: +ELLIPSIS
    0.857...
  """
  if target <= 0:
    raise ValueError(f"latency target must be > 0, got {target}")
  ratio = jnp.asarray(latency, jnp.float32) / target
  w = jnp.where(ratio <= 1.0, alpha, beta)
  return jnp.asarray(accuracy, jnp.float32) * ratio ** w
