"""FBNet's latency-aware search on a chain supernet (Wu et al., CVPR 2019).

:func:`search_fbnet` runs FBNet end to end on a
:class:`~jnas.supernet.chain.ChainSupernet`: Gumbel-softmax samples of
``alpha``, the loss ``CE * a * log(LAT) ** b`` with ``LAT`` the expected
latency of the sample under a latency table measured on the target device,
optionally with a latency target (:func:`latency_target_loss`), then the
derived architecture (argmax per block, :func:`derive_genotype`).
:class:`jnas.search.chain.ChainPlan` runs the same :class:`FBNetRun` from a
config through the one loop (work directory, checkpoints, retraining).

Example:
  >>> result = search_fbnet(space, table, data, epochs=8)  # doctest: +SKIP
  >>> result.genotype  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jnas.estimation.latency import LatencyTable, check_table, expected_latency, predicted_latency
from jnas.spaces.chain import ChainGenotype, ChainSpace
from jnas.supernet.chain import ChainSupernet, blocks_of, make_supernet_apply
from jnas.supernet.functional import cross_entropy, split_model
from jnas.utils.step_cache import cached_jit


def latency_target_loss(ce: jax.Array, latency: jax.Array, *, target: float,
                        a: float = 0.2, b: float = 0.6, penalty: float = 10.0) -> jax.Array:
  """FBNet's loss plus a hinge on a latency target: ``CE*a*log(LAT)^b + penalty*max(0, LAT/target - 1)``.

  ``latency`` and ``target`` share a unit (the search uses microseconds).
  Below the target only FBNet's term acts; above it the hinge pushes the
  architecture towards faster candidates with a force that does not fade as
  the cross-entropy falls.

  Example:
    >>> float(latency_target_loss(jnp.float32(1.0), jnp.float32(200.0), target=100.0, a=1.0,
    ...                           b=0.0, penalty=2.0))
    3.0
  """
  if target <= 0:
    raise ValueError(f"latency target must be > 0, got {target}")
  log_lat = jnp.log(jnp.maximum(latency, jnp.e))
  return ce * a * log_lat**b + penalty * jax.nn.relu(latency / target - 1.0)


def derive_genotype(space: ChainSpace, alpha: Mapping[str, Any] | jax.Array,
                    table: LatencyTable | None = None, target_ms: float | None = None
                    ) -> tuple[ChainGenotype, int]:
  """The argmax architecture of ``alpha``; with a target, made to meet it by the table.

  When ``target_ms`` is given and the argmax architecture's predicted latency
  exceeds it, blocks are switched one at a time to a faster candidate, each
  time the switch that gives up the least ``alpha`` per millisecond saved,
  until the prediction meets the target. Returns the genotype and how many
  switches were needed (0: the search met the target by itself).

  Example:
    >>> g, repairs = derive_genotype(space, {"blocks": alpha})  # doctest: +SKIP
  """
  a = np.asarray(blocks_of(alpha), np.float64)
  choice = list(np.argmax(a, axis=-1))
  if target_ms is None:
    return ChainGenotype(tuple(space.candidates[int(k)] for k in choice)), 0
  if table is None:
    raise ValueError("a latency target needs a latency table")
  check_table(table, space)
  ops = table.ops_ms
  cheapest = table.fixed_ms + float(ops.min(axis=1).sum())
  if cheapest > target_ms:
    raise ValueError(f"latency target {target_ms:.4f} ms is below the fastest architecture "
                     f"of the table ({cheapest:.4f} ms)")
  logp = a - np.log(np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)) - a.max(
      -1, keepdims=True)
  repairs = 0
  while table.fixed_ms + sum(ops[i, k] for i, k in enumerate(choice)) > target_ms:
    best = None
    for i, k in enumerate(choice):
      for j in range(ops.shape[1]):
        saved = ops[i, k] - ops[i, j]
        if saved <= 0:
          continue
        cost = (logp[i, k] - logp[i, j]) / saved
        if best is None or cost < best[0]:
          best = (cost, i, j)
    if best is None:  # unreachable: the cheapest architecture meets the target
      break
    choice[best[1]] = best[2]
    repairs += 1
  return ChainGenotype(tuple(space.candidates[int(k)] for k in choice)), repairs


@dataclasses.dataclass
class FBNetResult:
  """What :func:`search_fbnet` returns.

  ``genotype`` is the derived architecture, ``alpha`` the final logits
  ``[num_blocks, num_candidates]``, ``predicted_ms`` the table's latency of
  the genotype, ``val_acc`` its accuracy on the validation split with the
  supernet's shared weights (batch norm re-estimated for it), ``repairs`` how many blocks the target
  enforcement changed, ``history`` per-epoch metrics, ``supernet`` the trained
  module.
  """

  genotype: ChainGenotype
  alpha: np.ndarray
  predicted_ms: float
  val_acc: float
  repairs: int
  history: list[dict]
  seconds: float
  supernet: ChainSupernet | None = None


def evaluate_accuracy(apply_fn: Callable, params: Any, stats: Any, encoding: Any,
                      x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> float:
  """Accuracy of the supernet under ``encoding`` on ``(x, y)`` (inference-mode batch norm).

  Example:
    >>> evaluate_accuracy(apply, params, stats, one_hot, x_val, y_val)  # doctest: +SKIP
  """
  @jax.jit
  def correct(xb, yb):
    logits, _ = apply_fn(params, stats, encoding, xb, False)
    return jnp.sum(jnp.argmax(logits, -1) == yb)

  hits = 0
  for i in range(0, len(x), batch_size):
    hits += int(correct(jnp.asarray(x[i:i + batch_size]), jnp.asarray(y[i:i + batch_size])))
  return hits / len(x)


def recalibrate_batch_norm(apply_fn: Callable, params: Any, stats: Any, encoding: Any,
                           x: np.ndarray, *, batch_size: int = 256, steps: int = 30) -> Any:
  """Batch-norm running statistics of one architecture, re-estimated on ``x``.

  A supernet's running statistics were gathered on mixed (or other
  architectures') activations, which differ from a single architecture's, so
  evaluating an architecture with shared weights first re-estimates them
  (as SPOS does): ``steps`` training-mode forward passes over ``x`` (cycled),
  no weight update. Returns the new statistics; ``params`` are unchanged.

  Example:
    >>> stats = recalibrate_batch_norm(apply, params, stats, one_hot, x_train)  # doctest: +SKIP
  """
  @jax.jit
  def update(stats, xb):
    return apply_fn(params, stats, encoding, xb, True)[1]

  n = len(x)
  bs = min(batch_size, n)
  for i in range(steps):
    start = (i * bs) % max(n - bs + 1, 1)
    stats = update(stats, jnp.asarray(x[start:start + bs]))
  return stats


def _table_digest(table: LatencyTable) -> str:
  h = hashlib.sha256(np.ascontiguousarray(table.ops_ms, np.float64).tobytes())
  h.update(repr((table.stem_ms, table.head_ms, table.overhead_ms, table.fingerprint)).encode())
  return h.hexdigest()[:16]


class FBNetRun:
  """FBNet's pieces on a chain space: the state, one compiled epoch, its metrics, the result.

  :func:`search_fbnet` runs them in memory; :class:`jnas.search.chain.ChainPlan`
  runs them through the one loop (work directory, checkpoints, resume). The
  arguments are :func:`search_fbnet`'s, and ``saved_steps``: ``(directory,
  tag)`` to keep the two compiled epochs' traces there for a resumed run
  (:func:`jnas.utils.step_cache.cached_jit`; ``tag`` names the config).

  Example:
    >>> run = FBNetRun(space, table, data, epochs=8)  # doctest: +SKIP
    >>> state, means = run.train_epoch(run.init(), 0)  # doctest: +SKIP
  """

  def __init__(self, space: ChainSpace, table: LatencyTable, data: tuple, *, epochs: int = 8,
               seed: int = 0, batch_size: int = 64, warmup_epochs: int = 1,
               w_lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
               a_lr: float = 0.01, a: float = 0.2, b: float = 0.6, tau0: float = 5.0,
               tau_decay: float = 0.956, target_ms: float | None = None,
               penalty: float = 10.0, enforce_target: bool = False,
               log: Callable[[str], None] | None = None,
               saved_steps: tuple[Path, str] | None = None) -> None:
    from jnas.strategies.gumbel import fbnet_loss, gumbel, sample_encoding  # noqa: PLC0415

    check_table(table, space)
    if epochs < 1 or not 0 <= warmup_epochs < epochs:
      raise ValueError(f"need epochs >= 1 and 0 <= warmup_epochs < epochs, got {epochs}, "
                       f"{warmup_epochs}")
    (x_w, _), (x_a, _) = data
    self.steps_per_epoch = min(len(x_w), len(x_a)) // batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(f"batch_size {batch_size} exceeds the {min(len(x_w), len(x_a))} "
                       f"examples of a data half")
    self.space, self.table, self.data, self.epochs = space, table, data, epochs
    self.seed, self.batch_size, self.warmup_epochs, self.log = seed, batch_size, warmup_epochs, log
    self.tau0, self.tau_decay = tau0, tau_decay
    self.target_ms, self.enforce_target = target_ms, enforce_target
    k_model, self._k_search = jax.random.split(jax.random.key(seed))
    self.supernet = ChainSupernet(
        space, rngs=nnx.Rngs(int(jax.random.randint(k_model, (), 0, 2**30))))
    split = split_model(self.supernet)
    apply_fn = self.apply_fn = make_supernet_apply(split.graphdef)
    alpha = {"blocks": jnp.zeros((space.num_blocks, len(space.candidates)), jnp.float32)}
    total = epochs * self.steps_per_epoch
    w_opt = optax.chain(
        optax.clip_by_global_norm(5.0), optax.add_decayed_weights(weight_decay),
        optax.sgd(optax.cosine_decay_schedule(w_lr, total), momentum=momentum))
    # The table is in milliseconds; FBNet's log(LAT) wants a unit where networks cost > e.
    latency_us = lambda enc: 1e3 * expected_latency(table, enc)
    if target_ms is None:
      objective = lambda ce, lat: fbnet_loss(ce, lat, a=a, b=b)
    else:
      objective = lambda ce, lat: latency_target_loss(ce, lat, target=1e3 * target_ms, a=a,
                                                      b=b, penalty=penalty)
    steps_per_epoch = self.steps_per_epoch

    def tau(step):
      # FBNet anneals per epoch; warm-up epochs do not count.
      return tau0 * tau_decay ** jnp.maximum(step // steps_per_epoch - warmup_epochs, 0)

    strat = self.strategy = gumbel(apply_fn, split.params, split.state, alpha, w_opt=w_opt,
                                   a_opt=optax.adam(a_lr), tau=tau, hard=False,
                                   cost_fn=latency_us, objective=objective)

    def warmup_step(st, batch_train):
      # Weights only, on soft samples of the (still uniform) alpha.
      key_next, k = jax.random.split(st.key)
      enc = sample_encoding(k, st.alpha, tau(st.step), hard=False)

      def loss(p):
        logits, stats = apply_fn(p, st.batch_stats, enc, batch_train[0], True)
        return cross_entropy(logits, batch_train[1]), (stats, logits)

      (l, (stats, logits)), g = jax.value_and_grad(loss, has_aux=True)(st.params)
      upd, w_opt_state = w_opt.update(g, st.w_opt_state, st.params)
      metrics = {"train_loss": l, "train_acc": jnp.mean(jnp.argmax(logits, -1) == batch_train[1])}
      return st._replace(params=optax.apply_updates(st.params, upd), batch_stats=stats,
                         w_opt_state=w_opt_state, step=st.step + 1, key=key_next), metrics

    def scan_epoch(state, xw, yw, xa, ya, arch: bool):
      def body(st, batch):
        if arch:
          return strat.step(st, (batch[0], batch[1]), (batch[2], batch[3]))
        return warmup_step(st, (batch[0], batch[1]))
      state, ms = jax.lax.scan(body, state, (xw, yw, xa, ya))
      return state, jax.tree.map(jnp.mean, ms)

    # Two programs (warm-up epochs, architecture epochs). With ``saved_steps``
    # (directory, tag) their traces are kept there (jnas.utils.step_cache), so a
    # resumed search neither traces nor compiles them; the tag must cover what
    # the config does not: the latency table, which is measured at run time.
    directory, tag = saved_steps or (None, "")

    def place(arch: bool) -> Path | None:  # no place: cached_jit is a plain jax.jit
      return directory and Path(directory) / f"{'arch' if arch else 'warmup'}_epoch.jaxexport"

    self._scan_epoch = {arch: cached_jit(functools.partial(scan_epoch, arch=arch), place(arch),
                                         tag=f"{tag}:{_table_digest(table)}", donate_argnums=(0,))
                        for arch in (False, True)}

  def init(self) -> Any:
    """The search state before the first epoch."""
    return self.strategy.init(self._k_search)

  def train_epoch(self, state: Any, epoch: int) -> tuple[Any, dict]:
    """Epoch ``epoch`` (from 0) as one compiled scan; returns the state and its mean metrics.

    Batches and Gumbel keys depend only on the seed, the epoch and the state, so a resumed
    search ends as an uninterrupted one."""
    from jnas.data import epoch_batches  # noqa: PLC0415

    (x_w, y_w), (x_a, y_a) = self.data
    xw, yw = epoch_batches(x_w, y_w, self.batch_size, seed=self.seed, epoch=epoch)
    xa, ya = epoch_batches(x_a, y_a, self.batch_size, seed=self.seed + 7919, epoch=epoch)
    n = self.steps_per_epoch
    return self._scan_epoch[epoch >= self.warmup_epochs](
        state, jnp.asarray(xw[:n]), jnp.asarray(yw[:n]), jnp.asarray(xa[:n]), jnp.asarray(ya[:n]))

  def describe(self, state: Any, epoch: int, means: Mapping[str, Any]) -> dict:
    """Epoch ``epoch``'s history record: its mean metrics, temperature, expected latency and
    argmax genotype; logged through ``log``. A NaN/inf loss raises ``FloatingPointError``."""
    from jnas.strategies.darts import softmax_encoding  # noqa: PLC0415

    m = {k: float(v) for k, v in means.items()}
    if not math.isfinite(m["train_loss"]):
      raise FloatingPointError(f"FBNet search diverged at epoch {epoch} (train loss "
                               f"{m['train_loss']})")
    m.setdefault("val_loss", float("nan"))
    t = self.tau0 * self.tau_decay ** max(epoch - self.warmup_epochs, 0)
    m.update(epoch=epoch, tau=t, arch=epoch >= self.warmup_epochs,
             expected_ms=float(expected_latency(self.table, softmax_encoding(state.alpha))),
             genotype=list(self.space.encoding_to_genotype(state.alpha).blocks))
    if self.log is not None:
      self.log(f"epoch {epoch}: train_acc {m['train_acc']:.3f} val_loss {m['val_loss']:.3f} "
               f"E[lat] {m['expected_ms']:.4f} ms tau {t:.2f} {' '.join(m['genotype'])}")
    return m

  def result(self, state: Any, history: list[dict], seconds: float) -> FBNetResult:
    """The derived architecture (target enforced if asked) and its shared-weight accuracy."""
    t0 = time.perf_counter()
    space, table = self.space, self.table
    alpha_np = np.asarray(state.alpha["blocks"])
    genotype, repairs = derive_genotype(space, alpha_np, table,
                                        self.target_ms if self.enforce_target else None)
    onehot = {"blocks": jnp.asarray(space.genotype_to_encoding(genotype)["blocks"])}
    nnx.update(self.supernet, state.params, state.batch_stats)
    (x_w, _), (x_a, y_a) = self.data
    stats = recalibrate_batch_norm(self.apply_fn, state.params, state.batch_stats, onehot, x_w)
    val_acc = evaluate_accuracy(self.apply_fn, state.params, stats, onehot, x_a, y_a)
    return FBNetResult(genotype=genotype, alpha=alpha_np,
                       predicted_ms=predicted_latency(table, genotype), val_acc=val_acc,
                       repairs=repairs, history=list(history),
                       seconds=seconds + time.perf_counter() - t0, supernet=self.supernet)


def search_fbnet(space: ChainSpace, table: LatencyTable, data: tuple, **settings: Any
                 ) -> FBNetResult:
  """FBNet on a chain space with a latency table, in memory; returns the derived architecture.

  ``jnas search`` runs the same :class:`FBNetRun` through the one loop
  (:mod:`jnas.search.loop`: work directory, checkpoints, resume); this is the
  notebook form.

  Args:
    space: the chain space (the table must be made for it).
    table: latency lookup table of the target setting (device, batch, dtype).
    data: ``((x_w, y_w), (x_a, y_a))``: the half that trains the weights and
      the half that trains ``alpha`` (see :func:`jnas.data.split_train_val`).
    **settings: :class:`FBNetRun`'s keywords: ``epochs`` (8; the first
      ``warmup_epochs``, 1, train only weights), ``seed`` (weights, Gumbel
      samples and batch order), ``batch_size`` (64, both halves); ``w_lr``,
      ``momentum``, ``weight_decay`` of SGD with momentum (cosine decay) for the
      weights; ``a_lr`` of Adam for ``alpha``; FBNet's ``a``, ``b`` in
      ``CE * a * log(LAT) ** b`` with ``LAT`` in microseconds; the Gumbel
      temperature ``tau0 * tau_decay ** epoch``; an optional ``target_ms``
      (milliseconds, in the table's setting) adding :func:`latency_target_loss`'s
      hinge of weight ``penalty``; ``enforce_target`` to switch blocks to faster
      candidates if the argmax architecture still misses it
      (:func:`derive_genotype`); ``log``, a callback receiving one line per epoch.

  Returns:
    A :class:`FBNetResult`.

  Example:
    >>> ds = load_dataset("mnist1d")  # doctest: +SKIP
    >>> data = split_train_val(ds.x_train, ds.y_train, seed=0)  # doctest: +SKIP
    >>> search_fbnet(space, table, data, epochs=8).genotype  # doctest: +SKIP
  """
  t0 = time.perf_counter()
  run = FBNetRun(space, table, data, **settings)
  state, history = run.init(), []
  for epoch in range(run.epochs):
    state, means = run.train_epoch(state, epoch)
    history.append(run.describe(state, epoch, means))
  return run.result(state, history, time.perf_counter() - t0)
