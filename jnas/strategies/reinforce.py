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
they jit, and a run is reproducible from its key. ``controller="logits"``
swaps the LSTM for NAS-Bench-201's policy, one free softmax per decision
(:class:`LogitsPolicy`).

Settings, the papers' and this package's (``jnas tabular``'s defaults live in
:data:`jnas.search.tabular.STRATEGIES`; measured in
``benchmarks/results/reinforce/README.md``):

| | Zoph & Le 2017 | NAS-Bench-201 (Dong & Yang 2020) | ``jnas tabular`` |
|---|---|---|---|
| policy | 2-layer LSTM, 35 units | per-edge logits | per-edge logits |
| optimiser, step | Adam, 6e-4 | Adam, 1e-3 (the released scripts) | Adam, 0.05 |
| baseline | moving average of rewards | moving average, momentum 0.9 | moving average, decay 0.9 |
| entropy bonus | none | none | 0.01 |
| samples per update | m per replica (800 networks in flight) | 1 | 2 |
| reward | validation accuracy cubed | validation accuracy | signal column |

The per-edge policy has 30 numbers to learn on the NB201 cell, the LSTM
about 35,000: within a run of 60 queries the LSTM's updates mostly chase
noise, and on the MNIST-1D table its results spread wider than random
search's. The per-edge policy at Adam 0.05 with 2 samples per update keeps
the mean above random search's with no wider spread at that budget; with
three times the queries the LSTM learns more and ends higher.

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

__all__ = ["Controller", "ReinforceState", "reinforce", "controller_policy", "mnasnet_reward",
           "sizes_of", "distinct_pairs"]


def distinct_pairs(space_or_sizes: Any) -> tuple[tuple[int, int], ...]:
  """Pairs ``(t, u)`` of steps whose values must differ, from the space's rules.

  For DARTS (integer form ``[op, input]`` per kept edge) every kept edge of a
  node must read a different input; other spaces have no such rule.

  Example:
    >>> from jnas.spaces.darts import DartsSpace
    >>> distinct_pairs(DartsSpace(num_nodes=1))
    ((3, 1), (7, 5))
  """
  # A space states its rules (SearchSpace.distinct_index_pairs); a bare tuple of sizes has none,
  # as sizes_of tells the two forms apart by index_sizes.
  pairs = getattr(space_or_sizes, "distinct_index_pairs", None)
  return tuple(pairs()) if pairs is not None else ()


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
               tanh_constant: float | None = 2.5,
               distinct: Sequence[tuple[int, int]] = (), rngs: nnx.Rngs):
    self.sizes = tuple(int(s) for s in sizes)
    # (t, u): step t may not repeat the value chosen at earlier step u (a DARTS
    # node's second input differs from its first).
    self.distinct = tuple((int(t), int(u)) for t, u in distinct)
    if any(not 0 <= u < t < len(self.sizes) for t, u in self.distinct):
      raise ValueError(f"distinct pairs (t, u) need 0 <= u < t < {len(self.sizes)}, "
                       f"got {self.distinct}")
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

  def _run(self, batch: int, pick, xs) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Runs the LSTM over every step; ``pick(log_probs, x_t) -> int [batch]`` chooses."""
    sizes = jnp.asarray(self.sizes)
    offsets = jnp.asarray(self.offsets)
    width = self.head_w.shape[-1]
    steps = len(self.sizes)
    excl = np.zeros((steps, steps), bool)
    for t, u in self.distinct:
      excl[t, u] = True
    excl = jnp.asarray(excl)

    # One scanned step (steps differ only in their head, size and embedding
    # rows, all indexed by t), so compile time does not grow with the length.
    def step(carry, inp):
      lstm, x, logp, ent, hist = carry
      t, x_t = inp
      lstm, h = self.cell(lstm, x)
      logits = h @ self.head_w[t] + self.head_b[t]
      if self.tanh_constant is not None:
        logits = self.tanh_constant * jnp.tanh(logits / self.tanh_constant)
      taken = jnp.any(jax.nn.one_hot(hist, width, dtype=bool) & excl[t][None, :, None], axis=1)
      logits = jnp.where((jnp.arange(width) < sizes[t]) & ~taken, logits, -1e9)
      log_probs = jax.nn.log_softmax(logits)
      a = pick(log_probs, x_t).astype(jnp.int32)
      logp = logp + jnp.take_along_axis(log_probs, a[:, None], axis=-1)[:, 0]
      probs = jnp.exp(log_probs)
      ent = ent - jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)
      hist = hist.at[:, t].set(a)
      return (lstm, self.embed(offsets[t] + a + 1), logp, ent, hist), a

    zeros = jnp.zeros((batch, self.hidden))
    init = ((zeros, zeros), self.embed(jnp.zeros((batch,), jnp.int32)), jnp.zeros((batch,)),
            jnp.zeros((batch,)), jnp.full((batch, steps), -1, jnp.int32))
    (_, _, logp, ent, _), out = jax.lax.scan(step, init, (jnp.arange(steps), xs))
    return out.T, logp, ent

  def sample(self, key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``batch`` decision sequences ``int32 [batch, steps]``, their log-probs and entropies."""
    keys = jax.random.split(key, len(self.sizes))
    return self._run(batch, lambda lp, k: jax.random.categorical(k, lp), keys)

  def log_prob(self, decisions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log-probability and entropy (summed over steps) of given decision sequences."""
    decisions = jnp.asarray(decisions, jnp.int32)
    _, logp, ent = self._run(decisions.shape[0], lambda lp, d: d, decisions.T)
    return logp, ent

  def greedy(self) -> jax.Array:
    """The most likely decision at every step (arg-max decoding), ``int32 [steps]``."""
    dummy = jnp.zeros((len(self.sizes), 1), jnp.int32)
    return self._run(1, lambda lp, d: jnp.argmax(lp, axis=-1), dummy)[0][0]


class LogitsPolicy(nnx.Module):
  """Independent per-step logits (NAS-Bench-201's REINFORCE policy): no recurrence, no input.

  Same interface as :class:`Controller` (``sample``, ``log_prob``, ``greedy``).

  Example:
    >>> p = LogitsPolicy((5, 5, 3), rngs=nnx.Rngs(0))
    >>> p.log_prob(jnp.array([[0, 4, 2]]))[0].shape
    (1,)
  """

  def __init__(self, sizes: Sequence[int], *, rngs: nnx.Rngs):
    self.sizes = tuple(int(s) for s in sizes)
    self.logits = nnx.Param(jnp.zeros((len(self.sizes), max(self.sizes))))

  def _log_probs(self) -> jax.Array:
    valid = jnp.arange(max(self.sizes))[None, :] < jnp.asarray(self.sizes)[:, None]
    return jax.nn.log_softmax(jnp.where(valid, self.logits[...], -1e9), axis=-1)

  def _stats(self, decisions: jax.Array) -> tuple[jax.Array, jax.Array]:
    lp = self._log_probs()
    steps = jnp.arange(len(self.sizes))
    logp = jnp.sum(lp[steps[None, :], decisions], axis=-1)
    p = jnp.exp(lp)
    ent = -jnp.sum(jnp.where(p > 0, p * lp, 0.0))
    return logp, jnp.broadcast_to(ent, logp.shape)

  def sample(self, key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    lp = self._log_probs()
    d = jax.random.categorical(key, lp, axis=-1, shape=(batch, len(self.sizes))).astype(jnp.int32)
    return (d, *self._stats(d))

  def log_prob(self, decisions: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self._stats(jnp.asarray(decisions, jnp.int32))

  def greedy(self) -> jax.Array:
    return jnp.argmax(self._log_probs(), axis=-1).astype(jnp.int32)


class ReinforceState(NamedTuple):
  """Controller weights, Adam state, reward baseline and scale, RNG key and step count."""

  params: Any
  opt_state: Any
  baseline: jax.Array
  has_baseline: jax.Array
  key: jax.Array
  step: jax.Array
  reward_var: jax.Array  # moving average of (R - b)**2
  seen: jax.Array        # [memory, steps] int32: told decision sequences (ring; -1 = empty)
  num_seen: jax.Array    # () int32: how many were told (the ring's write position)
  seen_reward: jax.Array  # [memory] float32: their rewards


def reinforce(space_or_sizes: Any, *, batch_size: int = 1, hidden: int = 64,
              learning_rate: float = 0.02, entropy_weight: float = 0.01,
              baseline_decay: float = 0.9, tanh_constant: float | None = 2.5,
              init_scale: float = 0.08, normalize_advantage: bool = False,
              unseen_draws: int = 1, memory: int = 2048, controller: str = "lstm",
              reward_shaping: str = "baseline") -> AskTellStrategy:
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
    init_scale: weights start uniform in ``[-init_scale, init_scale]``.
    normalize_advantage: divide ``R - b`` by the square root of a moving
      average (same decay as the baseline) of ``(R - b)**2``, so that the
      update does not depend on the reward's scale (accuracy rewards differ
      by hundredths, which leaves the entropy bonus as large as the policy
      gradient). Off by default: on MNIST-1D with 24 trained architectures
      (``benchmarks/strategies_mnist1d.py``) it found worse architectures in
      both seeds tried (best validation 0.821 and 0.848 against 0.845 and
      0.878 without); on a synthetic table it was level with the default.
    unseen_draws: draws per architecture asked; each slot takes the first
      draw not told before (nor drawn earlier in the batch), else its first
      draw. 1 (default) asks plain samples, as Zoph & Le and NAS-Bench-201
      do, which a converged policy repeats, and a replay charges each repeat.
    memory: told architectures (and rewards) remembered for ``unseen_draws``
      and ``reward_shaping="rank"``; the oldest are forgotten beyond it.
    controller: ``"lstm"`` (Zoph & Le's recurrent controller, above) or
      ``"logits"`` (:class:`LogitsPolicy`: one free softmax per decision, the
      policy of NAS-Bench-201's REINFORCE; no distinct-input rule, so not for
      DARTS cells).
    reward_shaping: ``"baseline"``: advantage ``R - b`` (``b`` the moving
      average); ``"rank"``: the reward's rank among all told so far, mapped to
      ``[-1, 1]`` (no baseline, invariant to the reward's scale and outliers).

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
  distinct = distinct_pairs(space_or_sizes)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not 0.0 <= baseline_decay < 1.0:
    raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
  if unseen_draws < 1 or memory < 1:
    raise ValueError(f"unseen_draws and memory must be >= 1, got {unseen_draws} and {memory}")
  if controller == "lstm":
    make = lambda: Controller(sizes, hidden, tanh_constant=tanh_constant, distinct=distinct,
                              rngs=nnx.Rngs(0))
  elif controller == "logits":
    if distinct:
      raise ValueError("controller='logits' cannot keep a node's inputs distinct; use 'lstm'")
    make = lambda: LogitsPolicy(sizes, rngs=nnx.Rngs(0))
  else:
    raise ValueError(f"controller must be 'lstm' or 'logits', got {controller!r}")
  if reward_shaping not in ("baseline", "rank"):
    raise ValueError(f"reward_shaping must be 'baseline' or 'rank', got {reward_shaping!r}")
  graphdef, template = nnx.split(nnx.eval_shape(make), nnx.Param)
  tx = optax.adam(learning_rate)

  def init(key: jax.Array) -> ReinforceState:
    k_init, k_run = jax.random.split(key)
    # Zoph & Le initialise every controller weight uniformly in [-0.08, 0.08]
    # (one draw for all of them: each random call costs seconds to compile on CPU).
    leaves, treedef = jax.tree.flatten(template)
    flat = jax.random.uniform(k_init, (sum(leaf.size for leaf in leaves),), jnp.float32,
                              -init_scale, init_scale)
    splits = np.cumsum([leaf.size for leaf in leaves])[:-1]
    params = jax.tree.unflatten(treedef, [
        part.reshape(leaf.shape).astype(leaf.dtype)
        for part, leaf in zip(jnp.split(flat, splits), leaves)])
    return ReinforceState(params, tx.init(params), jnp.zeros(()), jnp.zeros((), bool), k_run,
                          jnp.zeros((), jnp.int32), jnp.zeros(()),
                          jnp.full((memory, len(sizes)), -1, jnp.int32), jnp.zeros((), jnp.int32),
                          jnp.zeros((memory,), jnp.float32))

  def ask(state: ReinforceState) -> tuple[ReinforceState, jax.Array]:
    key, sub = jax.random.split(state.key)
    draws = nnx.merge(graphdef, state.params).sample(sub, batch_size * unseen_draws)[0]
    if unseen_draws == 1:
      return state._replace(key=key), draws
    draws = draws.reshape(unseen_draws, batch_size, -1)
    # A draw is stale when it was told before or an earlier draw of the batch
    # already holds it; each slot takes its first fresh draw (else its first).
    flat = draws.reshape(unseen_draws * batch_size, -1)
    told = jnp.any(jnp.all(flat[:, None, :] == state.seen[None], -1), -1)
    same = jnp.all(flat[:, None, :] == flat[None, :, :], -1)
    earlier = jnp.tril(same, -1).any(-1)
    fresh = ~(told | earlier).reshape(unseen_draws, batch_size)
    pick = jnp.argmax(fresh, axis=0)
    return state._replace(key=key), draws[pick, jnp.arange(batch_size)]

  def tell(state: ReinforceState, decisions: jax.Array, rewards: jax.Array) -> ReinforceState:
    rewards = jnp.asarray(rewards, jnp.float32).reshape(-1)
    mean_r = jnp.mean(rewards)
    baseline = jnp.where(state.has_baseline, state.baseline, mean_r)
    centred = rewards - baseline
    sq = jnp.mean(jnp.square(centred))
    reward_var = jnp.where(state.has_baseline,
                           baseline_decay * state.reward_var + (1.0 - baseline_decay) * sq, sq)
    if normalize_advantage:
      # Until two different rewards were seen the scale is 0 and so is every advantage.
      centred = centred / jnp.sqrt(reward_var + 1e-12)
    if reward_shaping == "rank":
      # Each reward's place among all told so far, in [-1, 1]: robust to the
      # scale and to the outliers (dead cells) of accuracy rewards.
      valid = jnp.arange(memory) < state.num_seen
      below = jnp.sum(valid & (state.seen_reward[None, :] < rewards[:, None]), -1)
      equal = jnp.sum(valid & (state.seen_reward[None, :] == rewards[:, None]), -1)
      count = jnp.minimum(state.num_seen, memory)
      centred = jnp.where(count > 0, 2.0 * (below + 0.5 * equal) / jnp.maximum(count, 1) - 1.0,
                          0.0)
    advantage = jax.lax.stop_gradient(centred)

    def loss_fn(params):
      logp, ent = nnx.merge(graphdef, params).log_prob(decisions)
      return -jnp.mean(advantage * logp) - entropy_weight * jnp.mean(ent)

    grads = jax.grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    baseline = baseline_decay * baseline + (1.0 - baseline_decay) * mean_r
    n = decisions.shape[0]
    slots = (state.num_seen + jnp.arange(n)) % memory
    seen = state.seen.at[slots].set(jnp.asarray(decisions, jnp.int32))
    seen_reward = state.seen_reward.at[slots].set(rewards)
    return ReinforceState(params, opt_state, baseline, jnp.ones((), bool), state.key,
                          state.step + 1, reward_var, seen, state.num_seen + n, seen_reward)

  return AskTellStrategy(init, ask, tell)


def controller_policy(space_or_sizes: Any, state: ReinforceState, *, hidden: int = 64,
                      tanh_constant: float | None = 2.5, controller: str = "lstm"
                      ) -> Controller | LogitsPolicy:
  """The policy module of a state (to decode greedily or inspect probabilities).

  ``hidden``, ``tanh_constant`` and ``controller`` must match the ones given
  to :func:`reinforce`.

  Example:
    >>> s = reinforce((5,) * 6)
    >>> st = s.init(jax.random.key(0))
    >>> controller_policy((5,) * 6, st).greedy().shape
    (6,)
  """
  sizes = sizes_of(space_or_sizes)
  if controller == "logits":
    make = lambda: LogitsPolicy(sizes, rngs=nnx.Rngs(0))
  else:
    make = lambda: Controller(sizes, hidden, tanh_constant=tanh_constant,
                              distinct=distinct_pairs(space_or_sizes), rngs=nnx.Rngs(0))
  graphdef, _ = nnx.split(nnx.eval_shape(make))
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
