"""FBNet's latency-aware search on a chain supernet (Wu et al., CVPR 2019).

:func:`search_fbnet` runs FBNet end to end on a
:class:`~jnas.supernet.chain.ChainSupernet`: Gumbel-softmax samples of
``alpha``, the loss ``CE * a * log(LAT) ** b`` with ``LAT`` the expected
latency of the sample under a latency table measured on the target device,
optionally with a latency target (:func:`latency_target_loss`), then the
derived architecture (argmax per block, :func:`derive_genotype`).
:func:`jnas.search.chain.search_chain` runs it from a config with a work
directory, checkpoints and retraining.

Example:
  >>> result = search_fbnet(space, table, data, epochs=8)  # doctest: +SKIP
  >>> result.genotype  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
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


def search_fbnet(space: ChainSpace, table: LatencyTable, data: tuple, *, epochs: int = 8,
                 seed: int = 0, batch_size: int = 64, warmup_epochs: int = 1,
                 w_lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
                 a_lr: float = 0.01, a: float = 0.2, b: float = 0.6, tau0: float = 5.0,
                 tau_decay: float = 0.956, target_ms: float | None = None,
                 penalty: float = 10.0, enforce_target: bool = False,
                 log: Callable[[str], None] | None = None,
                 resume: Callable[[Any], tuple[Any, int, list, float] | None] | None = None,
                 after_epoch: Callable[[Any, int, list, float], None] | None = None
                 ) -> FBNetResult:
  """FBNet on a chain space with a latency table; returns the derived architecture.

  Args:
    space: the chain space (the table must be made for it).
    table: latency lookup table of the target setting (device, batch, dtype).
    data: ``((x_w, y_w), (x_a, y_a))``: the half that trains the weights and
      the half that trains ``alpha`` (see :func:`jnas.data.split_train_val`).
    epochs: search epochs; the first ``warmup_epochs`` train only weights.
    seed: weights, Gumbel samples and batch order.
    batch_size: examples per step (both halves).
    w_lr, momentum, weight_decay: SGD with momentum (cosine decay) for weights.
    a_lr: Adam for ``alpha``.
    a, b: FBNet's ``CE * a * log(LAT) ** b`` with ``LAT`` in microseconds.
    tau0, tau_decay: Gumbel temperature ``tau0 * tau_decay ** epoch``.
    target_ms: optional latency target (milliseconds, in the table's
      setting); adds :func:`latency_target_loss`'s hinge.
    penalty: weight of the hinge.
    enforce_target: after the search, switch blocks to faster candidates if
      the argmax architecture still misses the target (see
      :func:`derive_genotype`).
    log: optional callback receiving one line per epoch.
    resume: optional ``resume(fresh_state) -> (state, epochs_done, history,
      elapsed_s)`` or ``None``: where a stopped search goes on from (a
      checkpoint); epochs already done are not run again.
    after_epoch: optional ``after_epoch(state, epochs_done, history, elapsed_s)``
      called after every epoch (to checkpoint; it may raise ``KeyboardInterrupt``
      to stop). Batches and Gumbel keys depend only on the seed, the epoch and
      the state, so a resumed search ends as an uninterrupted one.

  Returns:
    A :class:`FBNetResult`.

  Example:
    >>> ds = load_dataset("mnist1d")  # doctest: +SKIP
    >>> data = split_train_val(ds.x_train, ds.y_train, seed=0)  # doctest: +SKIP
    >>> search_fbnet(space, table, data, epochs=8).genotype  # doctest: +SKIP
  """
  from jnas.data import epoch_batches
  from jnas.strategies.darts import softmax_encoding
  from jnas.strategies.gumbel import fbnet_loss, gumbel, sample_encoding

  check_table(table, space)
  if epochs < 1 or not 0 <= warmup_epochs < epochs:
    raise ValueError(f"need epochs >= 1 and 0 <= warmup_epochs < epochs, got {epochs}, "
                     f"{warmup_epochs}")
  t_start = time.perf_counter()
  (x_w, y_w), (x_a, y_a) = data
  steps_per_epoch = min(len(x_w), len(x_a)) // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"batch_size {batch_size} exceeds the {min(len(x_w), len(x_a))} examples "
                     f"of a data half")
  key = jax.random.key(seed)
  k_model, k_search = jax.random.split(key)
  supernet = ChainSupernet(space, rngs=nnx.Rngs(int(jax.random.randint(k_model, (), 0, 2**30))))
  split = split_model(supernet)
  apply_fn = make_supernet_apply(split.graphdef)
  alpha = {"blocks": jnp.zeros((space.num_blocks, len(space.candidates)), jnp.float32)}
  total = epochs * steps_per_epoch
  w_opt = optax.chain(
      optax.clip_by_global_norm(5.0), optax.add_decayed_weights(weight_decay),
      optax.sgd(optax.cosine_decay_schedule(w_lr, total), momentum=momentum))
  a_opt = optax.adam(a_lr)
  # The table is in milliseconds; FBNet's log(LAT) wants a unit where networks cost > e.
  latency_us = lambda enc: 1e3 * expected_latency(table, enc)
  if target_ms is None:
    objective = lambda ce, lat: fbnet_loss(ce, lat, a=a, b=b)
  else:
    objective = lambda ce, lat: latency_target_loss(ce, lat, target=1e3 * target_ms, a=a, b=b,
                                                    penalty=penalty)
  def tau(step):
    # FBNet anneals per epoch; warm-up epochs do not count.
    return tau0 * tau_decay ** jnp.maximum(step // steps_per_epoch - warmup_epochs, 0)

  strat = gumbel(apply_fn, split.params, split.state, alpha, w_opt=w_opt, a_opt=a_opt, tau=tau,
                 hard=False, cost_fn=latency_us, objective=objective)
  state = strat.init(k_search)

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

  @functools.partial(jax.jit, static_argnames=("arch",), donate_argnums=(0,))
  def run_epoch(state, xw, yw, xa, ya, arch: bool):
    def body(st, batch):
      if arch:
        return strat.step(st, (batch[0], batch[1]), (batch[2], batch[3]))
      return warmup_step(st, (batch[0], batch[1]))
    state, ms = jax.lax.scan(body, state, (xw, yw, xa, ya))
    return state, jax.tree.map(jnp.mean, ms)

  history, start_epoch, elapsed0 = [], 0, 0.0
  restored = resume(state) if resume is not None else None
  if restored is not None:
    state, start_epoch, history, elapsed0 = restored
    history = list(history)
    t_start = time.perf_counter()  # elapsed0 holds the time before the stop
  for epoch in range(start_epoch, epochs):
    arch = epoch >= warmup_epochs
    t = tau0 * tau_decay ** max(epoch - warmup_epochs, 0)
    xw, yw = epoch_batches(x_w, y_w, batch_size, seed=seed, epoch=epoch)
    xa, ya = epoch_batches(x_a, y_a, batch_size, seed=seed + 7919, epoch=epoch)
    n = steps_per_epoch
    state, m = run_epoch(state, jnp.asarray(xw[:n]), jnp.asarray(yw[:n]),
                         jnp.asarray(xa[:n]), jnp.asarray(ya[:n]), arch=arch)
    m = {k: float(v) for k, v in m.items()}
    if not math.isfinite(m["train_loss"]):
      raise FloatingPointError(f"FBNet search diverged at epoch {epoch} (train loss "
                               f"{m['train_loss']})")
    m.setdefault("val_loss", float("nan"))
    m.update(epoch=epoch, tau=t, arch=arch,
             expected_ms=float(expected_latency(table, softmax_encoding(state.alpha))),
             genotype=list(space.encoding_to_genotype(state.alpha).blocks))
    history.append(m)
    if log is not None:
      log(f"epoch {epoch}: train_acc {m['train_acc']:.3f} val_loss {m['val_loss']:.3f} "
          f"E[lat] {m['expected_ms']:.4f} ms tau {t:.2f} {' '.join(m['genotype'])}")
    if after_epoch is not None:
      after_epoch(state, epoch + 1, history, elapsed0 + time.perf_counter() - t_start)

  alpha_np = np.asarray(state.alpha["blocks"])
  genotype, repairs = derive_genotype(space, alpha_np, table,
                                      target_ms if enforce_target else None)
  onehot = {"blocks": jnp.asarray(space.genotype_to_encoding(genotype)["blocks"])}
  nnx.update(supernet, state.params, state.batch_stats)
  stats = recalibrate_batch_norm(apply_fn, state.params, state.batch_stats, onehot, x_w)
  val_acc = evaluate_accuracy(apply_fn, state.params, stats, onehot, x_a, y_a)
  return FBNetResult(genotype=genotype, alpha=alpha_np,
                     predicted_ms=predicted_latency(table, genotype), val_acc=val_acc,
                     repairs=repairs, history=history,
                     seconds=elapsed0 + time.perf_counter() - t_start, supernet=supernet)
