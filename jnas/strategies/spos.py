"""Single-path one-shot (SPOS) supernet training, and scoring a population with it.

Guo et al. (2019), following Bender et al. (2018): train the supernet so that
every path is trained fairly, by sampling one architecture uniformly at random
per step and updating only the weights on that path; then search the trained
supernet with evolution, scoring each candidate by its validation accuracy
with the shared weights after recalibrating batch-norm statistics on a few
training batches.

The uniform samples come from a *pool* of encodings drawn on the host before
training (optionally under hard constraints, e.g. a FLOPs range as in the
SPOS paper). The step picks a pool entry with the key in its state, so the
step stays a pure jitted function and a run is reproducible from its seed.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnas.ops import primitives as P
from jnas.spaces.base import SearchSpace
from jnas.strategies.base import Batch, GradientStrategy
from jnas.strategies.sampling import Constraints, as_constraints
from jnas.supernet.functional import cross_entropy


class SposState(NamedTuple):
  """SPOS training state (a pytree): weights, BN statistics, optimizer, key."""

  params: Any
  batch_stats: Any
  w_opt_state: optax.OptState
  step: jax.Array
  key: jax.Array


def encoding_pool(space: SearchSpace, size: int, *, seed: int = 0,
                  constraints: Constraints | Callable[[Any], bool] | None = None,
                  sampler: Callable[[np.random.Generator], Any] | None = None
                  ) -> dict[str, np.ndarray]:
  """``size`` sampled encodings (stacked) that satisfy ``constraints``.

  ``sampler(rng)`` draws one genotype; by default ``space.random_genotype``
  (every encoding equally likely).
  :func:`jnas.spaces.nb201_canonical.unique_cell_sampler` draws every
  function a NAS-Bench-201 cell can compute equally likely instead.

  Raises ``jnas.strategies.sampling.ConstraintError`` (a one-line message
  naming the limits) when the constraints reject every candidate.

  Example:
    >>> pool = encoding_pool(DartsSpace(), 16)  # doctest: +SKIP
    >>> pool["normal"].shape  # doctest: +SKIP
    (16, 14, 8)
  """
  if size < 1:
    raise ValueError(f"pool size must be >= 1, got {size}")
  rng = np.random.default_rng(seed)
  cons = as_constraints(constraints)
  draw = sampler or space.random_genotype
  genotypes = []
  for _ in range(size):
    genotypes.append(cons.sample(lambda: draw(rng)) if cons.active else draw(rng))
  encs = [space.genotype_to_encoding(g) for g in genotypes]
  return {k: np.stack([e[k] for e in encs]).astype(np.float32) for k in encs[0]}


class FewShot(NamedTuple):
  """Where a few-shot supernet is split (Zhao et al., ICML 2021), for :func:`spos`.

  The supernet is split on one choice point, edge ``edge`` of encoding part
  ``key``: one sub-supernet per candidate op there, each holding a full copy
  of the weights and the batch-norm statistics. A path trains (and is later
  scored by) the sub-supernet of its op on that edge, so paths that differ
  there no longer share, and fight over, the same weights.

  Attributes:
    key: the encoding part (``"cell"`` for NAS-Bench-201, ``"normal"`` or
      ``"reduce"`` for DARTS cells).
    edge: the edge (row of that part) to split on.
    num_ops: candidate ops on that edge (the number of sub-supernets).
    warmup_steps: steps trained as a one-shot supernet before the split: until
      then every sub-supernet gets the same update, so at the split each
      starts from the one-shot weights (the paper's transfer), and a
      few-shot search costs the same steps as a one-shot one.

  Example:
    >>> FewShot("cell", 0, 5, warmup_steps=1000).num_ops
    5
  """

  key: str
  edge: int
  num_ops: int
  warmup_steps: int


def parse_few_shot(text: str, pool: dict[str, np.ndarray], warmup_steps: int) -> FewShot | None:
  """``"KEY:EDGE"`` (e.g. ``"cell:0"``) as a :class:`FewShot` for ``pool``'s encodings; ``""`` is None.

  One-line ``ValueError`` for a malformed text, an unknown part or an edge
  out of range.

  Example:
    >>> parse_few_shot("cell:2", {"cell": np.zeros((4, 6, 5))}, 100)
    FewShot(key='cell', edge=2, num_ops=5, warmup_steps=100)
  """
  if not text:
    return None
  key, sep, edge = str(text).partition(":")
  if not sep or not edge.strip().lstrip("-").isdigit():
    raise ValueError(f"search.few_shot={text!r} is not KEY:EDGE (e.g. 'cell:0'; parts: "
                     f"{', '.join(sorted(pool))})")
  if key not in pool:
    raise ValueError(f"search.few_shot={text!r}: no encoding part {key!r} (parts: "
                     f"{', '.join(sorted(pool))})")
  edges, ops = np.shape(pool[key])[1:3]
  e = int(edge)
  if not 0 <= e < edges:
    raise ValueError(f"search.few_shot={text!r}: edge {e} out of range (part {key!r} has "
                     f"{edges} edges)")
  if warmup_steps < 0:
    raise ValueError(f"few-shot warm-up steps must be >= 0, got {warmup_steps}")
  return FewShot(key, e, int(ops), int(warmup_steps))


def stack_sub_supernets(tree: Any, num: int) -> Any:
  """``num`` copies of every leaf, stacked on a new leading axis: the sub-supernets' start.

  Example:
    >>> stack_sub_supernets({"w": jnp.ones(3)}, 5)["w"].shape
    (5, 3)
  """
  return jax.tree.map(lambda a: jnp.broadcast_to(a, (num,) + jnp.shape(a)), tree)


def few_shot_apply(apply_fn: Callable[..., tuple[jax.Array, Any]], split: FewShot
                   ) -> Callable[..., tuple[jax.Array, Any]]:
  """``apply_fn`` over stacked sub-supernets: each encoding runs in the one its split edge picks.

  The returned function takes params and batch statistics stacked on a
  leading axis of ``split.num_ops`` (see :func:`stack_sub_supernets`) and
  returns the new statistics stacked too (only the picked sub-supernet's
  change). The pick is a gather on a traced index, so one compiled program
  serves every architecture, as for a one-shot supernet; population
  evaluators built on it (:func:`make_population_evaluator`) score each cell
  with its own sub-supernet.

  Example:
    >>> fs_apply = few_shot_apply(single_apply, FewShot("cell", 0, 5, 0))  # doctest: +SKIP
    >>> logits, stats = fs_apply(stacked_params, stacked_stats, enc, x, True)  # doctest: +SKIP
  """

  def apply(params, stats, encoding, x, train, *args, **kwargs):
    s = jnp.argmax(encoding[split.key][split.edge])
    pick = lambda t: jax.tree.map(lambda a: a[s], t)
    logits, new = apply_fn(pick(params), pick(stats), encoding, x, train, *args, **kwargs)
    return logits, jax.tree.map(lambda all_, one: all_.at[s].set(one), stats, new)

  return apply


def spos(
    apply_fn: Callable[..., tuple[jax.Array, Any]],
    params: Any,
    batch_stats: Any,
    pool: dict[str, np.ndarray],
    *,
    w_opt: optax.GradientTransformation,
    few_shot: FewShot | None = None,
) -> GradientStrategy:
  """SPOS supernet training: one uniformly sampled path per step.

  Args:
    apply_fn: the supernet's *single-path* apply
      (``make_apply(graphdef, single_path=True)``), so only the sampled ops
      run and only their weights get gradients.
    params, batch_stats: initial supernet weights and BN statistics.
    pool: stacked encodings to sample from (see :func:`encoding_pool`).
    w_opt: the weight optimizer.
    few_shot: split the supernet into sub-supernets (:class:`FewShot`); the
      state then holds ``few_shot.num_ops`` stacked copies of the weights,
      BN statistics and optimizer state. Each step draws a path as before;
      before ``warmup_steps`` its gradient updates every copy alike (one-shot
      training), afterwards only the copy of the path's op on the split edge
      (its optimizer state too: weight decay and momentum do not move the
      others). Score with ``few_shot_apply(apply_fn, few_shot)``.

  Returns:
    A :class:`GradientStrategy`; ``step(state, batch_train, batch_val)``
    ignores ``batch_val`` (SPOS trains weights only). There are no
    architecture parameters: ``encoding``/``arch_params`` return ``None``.

  Example:
    >>> strat = spos(single_apply, params, stats, encoding_pool(space, 1024),
    ...              w_opt=optax.sgd(0.05, momentum=0.9))  # doctest: +SKIP
  """
  pool = jax.tree.map(jnp.asarray, pool)
  n = jax.tree.leaves(pool)[0].shape[0]

  def loss(p, stats, enc, batch):
    x, y = batch
    logits, new_stats = apply_fn(p, stats, enc, x, True)
    return cross_entropy(logits, y), (new_stats, logits)

  def init(key: jax.Array) -> SposState:
    if few_shot is None:
      return SposState(params, batch_stats, w_opt.init(params), jnp.zeros((), jnp.int32), key)
    num = few_shot.num_ops
    return SposState(stack_sub_supernets(params, num), stack_sub_supernets(batch_stats, num),
                     stack_sub_supernets(w_opt.init(params), num), jnp.zeros((), jnp.int32), key)

  def step(state: SposState, batch_train: Batch, batch_val: Batch | None = None):
    del batch_val
    key, k = jax.random.split(state.key)
    i = jax.random.randint(k, (), 0, n)
    enc = jax.tree.map(lambda a: a[i], pool)
    if few_shot is not None:
      return _few_shot_step(state, key, i, enc, batch_train)
    (l, (stats, logits)), g = jax.value_and_grad(loss, has_aux=True)(
        state.params, state.batch_stats, enc, batch_train)
    updates, opt_state = w_opt.update(g, state.w_opt_state, state.params)
    new = SposState(optax.apply_updates(state.params, updates), stats, opt_state,
                    state.step + 1, key)
    return new, {"train_loss": l, "train_acc": jnp.mean(jnp.argmax(logits, -1) == batch_train[1]),
                 "path": i}

  def _few_shot_step(state: SposState, key, i, enc, batch_train):
    s = jnp.argmax(enc[few_shot.key][few_shot.edge])
    pick = lambda t: jax.tree.map(lambda a: a[s], t)
    (l, (stats_s, logits)), g = jax.value_and_grad(loss, has_aux=True)(
        pick(state.params), pick(state.batch_stats), enc, batch_train)

    # Every sub-supernet takes the same gradient through its own optimizer state; the update
    # is kept where this step trains it: all of them during the warm-up, else the path's own.
    def update_one(p, o):
      u, o_new = w_opt.update(g, o, p)
      return optax.apply_updates(p, u), o_new

    p_all, o_all = jax.vmap(update_one)(state.params, state.w_opt_state)
    keep = (state.step < few_shot.warmup_steps) | (jnp.arange(few_shot.num_ops) == s)
    sel = lambda new, old: jax.tree.map(
        lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)
    stats_all = jax.tree.map(lambda a: jnp.broadcast_to(a, (few_shot.num_ops,) + a.shape),
                             stats_s)
    new = SposState(sel(p_all, state.params), sel(stats_all, state.batch_stats),
                    sel(o_all, state.w_opt_state), state.step + 1, key)
    return new, {"train_loss": l, "train_acc": jnp.mean(jnp.argmax(logits, -1) == batch_train[1]),
                 "path": i}

  return GradientStrategy(init=init, step=step, encoding=lambda s: None,
                          arch_params=lambda s: None)


def make_recalibrated_evaluator(apply_fn: Callable[..., tuple[jax.Array, Any]], *,
                                bn_momentum: float = 0.9, merge_val_batches: bool = True,
                                fuse_calibration: bool = True
                                ) -> Callable[..., dict[str, jax.Array]]:
  """Returns ``evaluate(params, stats, encoding, calib_x, val_x, val_y) -> metrics``.

  SPOS scores a sampled path with batch-norm statistics recomputed for that
  path: the running statistics are replaced by the mean over the training
  batches ``calib_x: [K, B, ...]`` of their batch statistics, then the path is
  evaluated on ``val_x: [M, B, ...]``, ``val_y: [M, B]``. One pure function:
  ``jax.jit`` it once and call it (or ``vmap`` it) for every architecture
  without recompiling.

  Args:
    apply_fn: the supernet's apply (single-path for speed on CPU).
    bn_momentum: the momentum of the supernet's batch norms (jnas's BNs use
      0.9, PyTorch's 0.1): one training-mode pass from zeroed statistics gives
      ``(1 - bn_momentum) * batch_statistic``, which is divided out.
    merge_val_batches: evaluate the ``M`` validation batches as one pass of
      ``M * B`` examples: the same numbers (inference-mode batch norm treats
      examples independently) from fewer, larger kernels. ``False`` runs them
      one batch at a time, which bounds memory by one batch.
    fuse_calibration: with ``merge_val_batches``, run calibration and
      validation as *one* forward pass of ``(K + M) * B`` examples under
      :func:`jnas.ops.primitives.recalibrating_batch_norm`: every batch norm
      computes the calibration batches' statistics and normalises the
      validation examples with them on the spot. The same numbers as the
      separate passes (up to float rounding), with a third of the passes,
      and no statistics carried in or out of the network. It needs every
      batch norm to go through ``jnas.ops.primitives.batch_norm`` (all jnas
      supernets do) and to be traced when ``apply_fn`` is called (not an
      ``apply_fn`` wrapped in ``jax.jit`` and traced before): a ValueError
      says so otherwise. Ignored when ``merge_val_batches`` is false.

  Example:
    >>> ev = jax.jit(make_recalibrated_evaluator(single_apply))  # doctest: +SKIP
    >>> ev(params, stats, enc, calib_x, val_x, val_y)["accuracy"]  # doctest: +SKIP
  """
  if not 0.0 <= bn_momentum < 1.0:
    raise ValueError(f"bn_momentum must be in [0, 1), got {bn_momentum}")

  def fused(params, stats, encoding, calib_x, val_x, val_y):
    k, b = calib_x.shape[:2]
    x = _fused_inputs(calib_x, val_x)
    with P.recalibrating_batch_norm(k, b) as recal:
      logits, _ = apply_fn(params, stats, encoding, x, True)
    _check_recalibration_traced(recal)
    return _val_metrics(logits[k * b:], val_y)

  def evaluate(params, stats, encoding, calib_x, val_x, val_y):
    zeros = jax.tree.map(jnp.zeros_like, stats)

    def calib(total, x):
      _, new = apply_fn(params, zeros, encoding, x, True)
      return jax.tree.map(lambda t, a: t + a / (1.0 - bn_momentum), total, new), None

    total, _ = jax.lax.scan(calib, zeros, calib_x)
    recal = jax.tree.map(lambda t: t / calib_x.shape[0], total)

    def val(carry, batch):
      x, y = batch
      logits, _ = apply_fn(params, recal, encoding, x, False)
      correct = jnp.sum(jnp.argmax(logits, -1) == y)
      loss = cross_entropy(logits, y) * y.shape[0]
      return (carry[0] + correct, carry[1] + loss), None

    zero = (jnp.zeros((), jnp.int32), jnp.zeros(()))
    if merge_val_batches:
      (correct, loss), _ = val(zero, (val_x.reshape((-1,) + val_x.shape[2:]), val_y.reshape(-1)))
    else:
      (correct, loss), _ = jax.lax.scan(val, zero, (val_x, val_y))
    count = val_y.shape[0] * val_y.shape[1]
    return {"accuracy": correct / count, "loss": loss / count}

  return fused if merge_val_batches and fuse_calibration else evaluate


def _fused_inputs(calib_x: jax.Array, val_x: jax.Array) -> jax.Array:
  """``[K, B, ...]`` and ``[M, B, ...]`` batches as one ``[(K + M) * B, ...]`` pass."""
  return jnp.concatenate([calib_x.reshape((-1,) + calib_x.shape[2:]),
                          val_x.reshape((-1,) + val_x.shape[2:])])


def _check_recalibration_traced(recal) -> None:
  if not recal.traced:
    raise ValueError(
        "fuse_calibration: apply_fn traced no batch norm inside recalibrating_batch_norm, so "
        "its batch norms would normalise the validation examples with calibration "
        "statistics. It may be a function jitted and traced before (its cached trace "
        "ignores the context) or a network without jnas batch norms; pass "
        "fuse_calibration=False")


def _val_metrics(logits: jax.Array, val_y: jax.Array) -> dict[str, jax.Array]:
  y = val_y.reshape(-1)
  return {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y), "loss": cross_entropy(logits, y)}


def pad_population(encodings: dict[str, np.ndarray], size: int) -> dict[str, jax.Array]:
  """Stacked encodings padded (with copies of the first) to ``size`` rows, as float32 arrays.

  A population evaluator compiles once per population size, so a shorter last
  generation is padded to the full size; keep the first ``n`` outputs.

  Example:
    >>> pad_population({"normal": np.zeros((3, 14, 8))}, 5)["normal"].shape
    (5, 14, 8)
  """
  n = next(iter(encodings.values())).shape[0]
  if n > size:
    raise ValueError(f"{n} encodings do not fit a population of {size}")
  return {k: jnp.asarray(np.concatenate([v, np.repeat(v[:1], size - n, axis=0)])
                         if n < size else v, jnp.float32) for k, v in encodings.items()}


def make_population_evaluator(apply_fn: Callable[..., tuple[jax.Array, Any]], *,
                              bn_momentum: float = 0.9, merge_val_batches: bool = True,
                              fuse_calibration: bool = True, mesh: jax.sharding.Mesh | None = None,
                              prefix_fn: Callable[..., Any] | None = None
                              ) -> Callable[..., dict[str, jax.Array]]:
  """Returns ``evaluate(params, stats, encodings, calib_x, val_x, val_y) -> metrics [P]``.

  :func:`make_recalibrated_evaluator` mapped over a stacked population of
  encodings (leading axis ``P``) with ``lax.map``: architectures run one
  after another inside one compiled program, so a single-path ``apply_fn``
  runs only each architecture's chosen ops (a ``vmap`` would turn its switch
  into a select over every candidate), and nothing recompiles per
  architecture. Jit it once per population size. ``bn_momentum``,
  ``merge_val_batches`` and ``fuse_calibration`` are as in
  :func:`make_recalibrated_evaluator`.

  ``mesh``: split the population along the mesh's first axis with
  ``jax.shard_map``, each device mapping over its share (a population that
  does not divide is padded with copies of its first architecture, whose
  results are dropped). On a CPU with one host device per core (e.g.
  ``jax.config.update("jax_num_cpu_devices", 2)`` before JAX starts,
  :func:`jnas.parallel.seed_mesh`), each device runs its architectures on a
  core of its own: the single-path kernels are too small to keep two threads
  busy (256 MNIST-1D architectures took 1.60 s on two devices against 2.30 s
  on one, ``benchmarks/population_eval.py``).

  ``prefix_fn``: :func:`jnas.supernet.make_prefix` of a supernet with a
  ``shared_prefix`` (the DARTS supernet, whose ``apply_fn`` must then be
  single path and unrolled): the part of the pass that no architecture
  changes (the stem, and every candidate on the edges it feeds) runs once
  for the population, and each architecture picks its ops' outputs from it.
  The same numbers up to float rounding. Needs the fused calibration (the
  default); not for few-shot supernets, whose shared edges differ per
  sub-supernet.

  Example:
    >>> pop = jax.jit(make_population_evaluator(single_apply))  # doctest: +SKIP
    >>> pop(params, stats, encodings, calib_x, val_x, val_y)["accuracy"].shape  # doctest: +SKIP
    (64,)
  """
  if prefix_fn is not None and not (merge_val_batches and fuse_calibration):
    raise ValueError("make_population_evaluator: prefix_fn needs merge_val_batches=True and "
                     "fuse_calibration=True")
  one = make_recalibrated_evaluator(apply_fn, bn_momentum=bn_momentum,
                                    merge_val_batches=merge_val_batches,
                                    fuse_calibration=fuse_calibration)

  def evaluate(params, stats, encodings, calib_x, val_x, val_y):
    if prefix_fn is None:
      return jax.lax.map(lambda e: one(params, stats, e, calib_x, val_x, val_y), encodings)
    k, b = calib_x.shape[:2]
    x = _fused_inputs(calib_x, val_x)
    with P.recalibrating_batch_norm(k, b) as recal:
      shared = prefix_fn(params, stats, x, True)

      def one_shared(e):
        logits, _ = apply_fn(params, stats, e, x, True, shared)
        return _val_metrics(logits[k * b:], val_y)

      out = jax.lax.map(one_shared, encodings)
    _check_recalibration_traced(recal)
    return out

  if mesh is None:
    return evaluate
  axis = mesh.axis_names[0]
  devices = mesh.shape[axis]
  rep, split = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(axis)
  # shard_map, not sharding propagation: each device runs the plain per-device program, so the
  # native CPU kernels (custom calls) need no partitioning rule.
  per_device = jax.shard_map(evaluate, mesh=mesh, in_specs=(rep, rep, split, rep, rep, rep),
                             out_specs=split, check_vma=False)

  def evaluate_split(params, stats, encodings, calib_x, val_x, val_y):
    n = jax.tree.leaves(encodings)[0].shape[0]
    pad = -n % devices
    if pad:
      encodings = jax.tree.map(
          lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]), encodings)
    out = per_device(params, stats, encodings, calib_x, val_x, val_y)
    return jax.tree.map(lambda a: a[:n], out)

  return evaluate_split
