"""Zero-cost proxies: scores of an untrained network that rank NAS-Bench-201 cells without training.

Every proxy is "higher is better" and is computed for a whole population with
ONE compiled function per proxy: the cell is a traced argument of the
NAS-Bench-201 supernet (:class:`~jnas.supernet.nb201.NB201Supernet` with
affine batch norms, run as its single path, as
:class:`~jnas.nb201_table.CellTrainer` trains the table's cells),
so the population is a ``lax.map`` over cells inside one ``jit``. All cells
share the supernet's initialisation for ``seed`` (each cell's network is still
a fresh random initialisation; the papers draw one per cell instead).

* ``synflow`` (Tanaka et al., NeurIPS 2020, as Abdelfattah et al., ICLR 2021
  use it for NAS): every weight replaced by its absolute value, the input all
  ones (one example), ``R = sum(logits)``, score ``sum(theta * dR/dtheta)``
  over the convolution and classifier weights. Batch norm is taken out
  (Abdelfattah et al.'s ``bn=False``): it runs in inference form with running
  statistics set to mean 0 and variance ``1 - eps``, i.e. the identity. In
  float64 (``jax.enable_x64``), as the paper's ``net.double()``: through 15
  cells of 3x3 convolutions the activations pass 1e50, beyond float32. The
  network's own head averages in float32, so synflow runs the head's
  operations itself, in float64. Needs no data, only the input shape.
* ``naswot`` (Mellor et al., ICML 2021): for a minibatch (128 examples by
  default, as the paper), each ReLU's binary code per example; the kernel
  ``K[i, j] = sum over ReLU units of [c_i == c_j]`` (``N_A`` minus the
  Hamming distance); score ``log|det K|`` (computed in float64 on the host).
  Batch norm uses batch statistics (the paper's networks in training mode).
  The ReLUs are those of the NAS-Bench-201 network: before every convolution
  of the cells and the reduction blocks, and in the head; a convolution edge
  on a zero node still counts, as its ReLU module still runs in PyTorch.
* ``snip`` (Lee et al., ICLR 2019, as Abdelfattah et al.): ``sum |g * w|``
  over the convolution and classifier weights, ``g`` the gradient of the
  cross-entropy on one minibatch (64 by default, the paper's), batch norm
  with batch statistics.
* ``grad_norm`` (Abdelfattah et al.): the sum over those weight tensors of
  the L2 norm of each one's gradient (their per-layer norms, summed).
* ``params``, ``flops``: the discrete network's parameter count (as
  :func:`jnas.nb201_table.nb201_params`) and multiply-adds per
  example, counted from shapes with :func:`jnas.estimation.flops.conv_cost`'s
  conventions (pooling, additions and batch norm are free). Every edge counts,
  dead ones included, as in the network a string builds.

Deviations from the papers: the weights are the supernet's (one draw shared by
all cells, not one per cell); the weight initialisation is jnas's (He normal
convolutions), not PyTorch's default; a "layer" of ``grad_norm`` and the
weights of synflow/snip are the arrays named ``w`` (convolutions and the
classifier), as the papers take ``Conv2d``/``Linear`` weights.

Example:
  >>> zc = ZeroCost(NB201Skeleton((40, 1), 10, channels=4, cells_per_stage=1))
  >>> convs = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|"
  >>> pool = "|none~0|+|none~0|none~1|+|avg_pool_3x3~0|none~1|none~2|"
  >>> s = zc.score("synflow", [convs, pool])
  >>> bool(s[0] > s[1] > 0)
  True
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jnas.estimation.nb201_cells import NB201Skeleton, cell_indices, nb201_cost
from jnas.estimation.population_filter import Prefiltered, prefilter
from jnas.spaces.nb201 import NB201Space
from jnas.supernet.functional import cross_entropy, make_apply, split_model
from jnas.supernet.nb201 import NB201SearchCell, NB201Supernet
from jnas.train.nb201_network import ReLUConvBN

__all__ = ["PROXIES", "DATA_PROXIES", "NB201Skeleton", "ZeroCost", "Prefiltered", "check_proxy",
           "default_batch", "nb201_cost", "cell_indices", "prefilter"]

#: Every proxy :class:`ZeroCost` computes, by name.
PROXIES: tuple[str, ...] = ("synflow", "naswot", "snip", "grad_norm", "params", "flops")
#: The proxies that need a minibatch of data (the others need only the input shape).
DATA_PROXIES: frozenset[str] = frozenset({"naswot", "snip", "grad_norm"})
_DEFAULT_BATCH = {"naswot": 128, "snip": 64, "grad_norm": 64}


def check_proxy(name: str) -> str:
  """``name`` if it is a proxy; otherwise a one-line ``ValueError`` listing them.

  Example:
    >>> check_proxy("synflow")
    'synflow'
  """
  if name not in PROXIES:
    raise ValueError(f"unknown zero-cost estimator {name!r} (known: {', '.join(PROXIES)})")
  return name


def default_batch(name: str) -> int:
  """The papers' minibatch size for a data proxy (0 for those that need no data).

  Example:
    >>> default_batch("naswot"), default_batch("synflow")
    (128, 0)
  """
  return _DEFAULT_BATCH.get(check_proxy(name), 0)


class ZeroCost:
  """Zero-cost proxies of NAS-Bench-201 cells in one skeleton, one compilation per proxy.

  Args:
    skeleton: the network the cells are scored in.
    space: the cell space (the benchmark's by default).
    seed: the supernet initialisation every cell's weights come from.
    chunk: cells per call of a compiled function (the population is padded
      to a multiple; it bounds memory, and every chunk reuses the program).
    vmap_size: cells evaluated together inside a chunk. 1 (the default) runs
      them one after another, so each edge's op is a real switch and only the
      chosen ops run (the fast form on a CPU); larger values vmap groups of
      cells, where a switch runs every candidate (more parallel work, for
      accelerators).

  Example:
    >>> zc = ZeroCost(NB201Skeleton((40, 1), 10, channels=4, cells_per_stage=1))
    >>> x, y = np.ones((8, 40, 1), np.float32), np.arange(8) % 10
    >>> zc.score("snip", ["|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"],
    ...          x, y).shape
    (1,)
  """

  def __init__(self, skeleton: NB201Skeleton, *, space: NB201Space | None = None, seed: int = 0,
               chunk: int = 64, vmap_size: int = 1):
    if chunk < 1 or vmap_size < 1 or chunk % vmap_size:
      raise ValueError(f"chunk ({chunk}) and vmap_size ({vmap_size}) must be >= 1, and "
                       f"vmap_size must divide chunk")
    self.skeleton, self.space, self.seed = skeleton, space or NB201Space(), int(seed)
    self.chunk, self.vmap_size = int(chunk), int(vmap_size)
    sk = skeleton
    self._split = split_model(NB201Supernet(
        self.space, sk.input_shape[-1], sk.num_classes, ndim=sk.ndim, channels=sk.channels,
        cells_per_stage=sk.cells_per_stage, affine=True, rngs=nnx.Rngs(self.seed)))
    self._fns: dict[str, Any] = {}
    self._synflow_inputs = None

  # -- public -------------------------------------------------------------------------------

  def score(self, name: str, archs: Any, x: Any = None, y: Any = None) -> np.ndarray:
    """``[n]`` float64 scores of proxy ``name`` (higher is better) for a population.

    Args:
      name: one of :data:`PROXIES`.
      archs: the cells, in any form :func:`cell_indices` reads.
      x, y: a minibatch ``[B, *input_shape]`` and its integer labels; needed by
        :data:`DATA_PROXIES` (``naswot`` needs no labels), ignored otherwise.

    Example:
      >>> zc.score("params", ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])  # doctest: +SKIP
      array([7026.])
    """
    check_proxy(name)
    cells = cell_indices(archs, self.space)
    if name in ("params", "flops"):
      costs = nb201_cost(cells, self.skeleton, self.space)
      return np.asarray([c.params if name == "params" else c.madds for c in costs], np.float64)
    data: tuple[Any, ...] = ()
    if name in DATA_PROXIES:
      data = self._check_batch(name, x, y)
    out = []
    for i in range(0, len(cells), self.chunk):
      part = cells[i:i + self.chunk]
      padded = np.concatenate([part, np.zeros((self.chunk - len(part), part.shape[1]),
                                              np.int32)])
      out.append(self._run(name, padded, data)[:len(part)])
    if not out:
      return np.zeros((0,), np.float64)
    raw = np.concatenate(out)
    if name == "naswot":
      return np.asarray([np.linalg.slogdet(k)[1] for k in raw.astype(np.float64)])
    return raw.astype(np.float64)

  def compilations(self, name: str | None = None) -> int:
    """Programs compiled for proxy ``name`` (all proxies when ``None``): 1 each once used.

    Example:
      >>> zc.compilations("synflow")  # doctest: +SKIP
      1
    """
    names = [name] if name is not None else list(self._fns)
    return sum(self._fns[n]._cache_size() for n in names if n in self._fns)

  def scorer(self, name: str, x: Any = None, y: Any = None
             ) -> Callable[[Mapping[str, np.ndarray], list], np.ndarray]:
    """The proxy as an ask/tell scorer, ``scorer(encodings, genotypes) -> [n] scores``.

    See :mod:`jnas.strategies.driver` for the contract; the minibatch is fixed.

    Example:
      >>> run_ask_tell(strategy, space, zc.scorer("synflow"), ...)  # doctest: +SKIP
    """
    check_proxy(name)
    if name in DATA_PROXIES:
      self._check_batch(name, x, y)

    def scorer(encodings, genotypes):
      del genotypes
      return self.score(name, encodings, x, y)

    return scorer

  # -- internals ----------------------------------------------------------------------------

  def _check_batch(self, name: str, x: Any, y: Any) -> tuple[Any, ...]:
    if x is None or (y is None and name != "naswot"):
      raise ValueError(f"the {name} proxy needs a minibatch of data (x{', y' * (name != 'naswot')})")
    x = np.asarray(x, np.float32)
    if x.ndim != len(self.skeleton.input_shape) + 1 or x.shape[1:] != self.skeleton.input_shape:
      raise ValueError(f"the minibatch has shape {x.shape}; the skeleton takes "
                       f"[B, {', '.join(map(str, self.skeleton.input_shape))}]")
    if x.shape[0] < 2:
      raise ValueError(f"the {name} proxy needs a minibatch of at least 2 examples")
    if name == "naswot":
      return (jnp.asarray(x),)
    y = np.asarray(y)
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f"labels must be {x.shape[0]} integers, got shape {y.shape} of {y.dtype}")
    return jnp.asarray(x), jnp.asarray(y, jnp.int32)

  def _run(self, name: str, cells: np.ndarray, data: tuple[Any, ...]) -> np.ndarray:
    s = self._split
    if name == "synflow":
      # x64 must hold while tracing (float64 arrays exist only then) and while running.
      with jax.enable_x64(True):
        if self._synflow_inputs is None:
          self._synflow_inputs = _synflow_inputs(s.params, s.state)
        fn = self._compiled(name)
        return np.asarray(fn(*self._synflow_inputs, jnp.asarray(cells)))
    fn = self._compiled(name)
    return np.asarray(fn(s.params, s.state, jnp.asarray(cells), *data))

  def _compiled(self, name: str):
    if name not in self._fns:
      one = _ONE[name](self._split.graphdef, len(self.space.ops), self.skeleton.input_shape)
      self._fns[name] = jax.jit(_population(one, self.vmap_size))
    return self._fns[name]


def _population(one: Callable, vmap_size: int) -> Callable:
  """``run(params, state, cells, *data)``: ``one`` for every row of ``cells`` (``[chunk, E]``)."""

  def run(params, state, cells, *data):
    f = lambda cell: one(params, state, cell, *data)
    if vmap_size == 1:  # a scan: the cell is not batched, so each edge's switch stays a switch
      return jax.lax.map(f, cells)
    return jax.lax.map(f, cells, batch_size=vmap_size)

  return run


# ---------------------------------------------------------------------------------------------
# One cell's proxies (pure functions of the supernet's weights and the cell's op indices)
# ---------------------------------------------------------------------------------------------


def _is_weight(path) -> bool:
  """Convolution and classifier weights: the arrays named ``w`` (not batch norms or biases)."""
  names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  return bool(names) and names[-1] == "w"


def _weight_sum(fn: Callable[[jax.Array, jax.Array], jax.Array], params, grads) -> jax.Array:
  total = 0.0
  flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_g = jax.tree.leaves(grads)
  for (path, p), g in zip(flat_p, flat_g):
    if _is_weight(path):
      total = total + fn(p, g)
  return total


def _merge(graphdef, params, state):
  # Fresh Variables in the current trace (NNX refuses to update those made in another).
  params, state = jax.tree.map(lambda a: a, (params, state))
  return nnx.merge(graphdef, params, state)


def _code_kernel(h: jax.Array) -> jax.Array:
  """``[B, B]``: ReLU units on which two examples agree (both active or both inactive)."""
  a = jnp.where(h.reshape(h.shape[0], -1) > 0, 1.0, -1.0).astype(jnp.float32)
  # a_i . a_j = agreements - disagreements; agreements = (units + a_i . a_j) / 2. Exact in
  # float32 below 2^24 units.
  return 0.5 * (a.shape[1] + jnp.matmul(a, a.T, precision=jax.lax.Precision.HIGHEST))


def _body(model: NB201Supernet, x: jax.Array, w: jax.Array, *, train: bool,
          tap: Callable[[jax.Array], jax.Array] | None = None) -> tuple[jax.Array, Any]:
  """The supernet up to its head, each edge its chosen op only; ``tap`` sums over ReLU inputs.

  Mirrors :meth:`NB201Supernet.__call__` and :class:`NB201SearchCell` (which
  do not expose the node values the ReLU codes are taken from).
  """
  kernel = 0.0
  h = model.stem(x, train=train)
  for layer in model.layers:
    if isinstance(layer, NB201SearchCell):
      nodes = [h]
      for j in range(1, layer.num_nodes):
        total = None
        for e, (dst, src) in enumerate(layer.edge_list):
          if dst != j:
            continue
          edge = layer.edges[e]
          out = edge(nodes[src], w[e], train=train, single_path=True)
          if tap is not None:
            # The chosen op has a ReLU iff it is a ReLU-conv-BN; w[e] is one-hot.
            relu = jnp.asarray([isinstance(c, ReLUConvBN) for c in edge.candidates], w.dtype)
            kernel = kernel + jnp.dot(w[e], relu) * tap(nodes[src])
          total = out if total is None else total + out
        nodes.append(total)
      h = nodes[-1]
    else:
      if tap is not None:
        # The block's two ReLUs see its input and its first ReLU-conv-BN's output; XLA merges
        # this second evaluation of conv_a with the block's own.
        kernel = kernel + tap(h) + tap(layer.conv_a(h, train=train))
      h = layer(h, train=train)
  return h, kernel


def _synflow_inputs(params, state):
  """|weights| in float64, and batch-norm statistics that make inference-form BN the identity."""
  p = jax.tree.map(lambda a: jnp.abs(jnp.asarray(a, jnp.float64)), params)
  eps = 1e-5  # EdgeBatchNorm's: rsqrt((1 - eps) + eps) = 1
  flat, treedef = jax.tree_util.tree_flatten_with_path(state)
  leaves = []
  for path, a in flat:
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    fill = 1.0 - eps if names and names[-1] == "var" else 0.0
    leaves.append(jnp.full(a.shape, fill, jnp.float64))
  return p, jax.tree_util.tree_unflatten(treedef, leaves)


def _synflow_one(graphdef, num_ops: int, input_shape: tuple[int, ...]):
  def one(params, state, cell):
    w = jax.nn.one_hot(cell, num_ops, dtype=jnp.float64)
    x = jnp.ones((1, *input_shape), jnp.float64)

    def total(p):
      model = _merge(graphdef, p, state)
      h, _ = _body(model, x, w, train=False)
      head = model.head
      # The head's own call averages in float32; these are its operations in float64.
      h = jax.nn.relu(head.bn(h, train=False))
      pooled = jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))
      return jnp.sum(pooled @ head.w.get_value() + head.b.get_value())

    grads = jax.grad(total)(params)
    return _weight_sum(lambda p, g: jnp.sum(p * g), params, grads)

  return one


def _naswot_one(graphdef, num_ops: int, input_shape: tuple[int, ...]):
  del input_shape

  def one(params, state, cell, x):
    w = jax.nn.one_hot(cell, num_ops)
    model = _merge(graphdef, params, state)
    h, kernel = _body(model, x, w, train=True, tap=_code_kernel)
    return kernel + _code_kernel(model.head.bn(h, train=True))  # the head's ReLU

  return one


def _gradient_one(kind: str):
  def make(graphdef, num_ops: int, input_shape: tuple[int, ...]):
    del input_shape
    apply = make_apply(graphdef, single_path=True)

    def one(params, state, cell, x, y):
      enc = {"cell": jax.nn.one_hot(cell, num_ops)}
      loss = lambda p: cross_entropy(apply(p, state, enc, x, True)[0], y)
      grads = jax.grad(loss)(params)
      if kind == "snip":
        return _weight_sum(lambda p, g: jnp.sum(jnp.abs(p * g)), params, grads)
      return _weight_sum(lambda p, g: jnp.sqrt(jnp.sum(g * g)), params, grads)

    return one

  return make


_ONE = {"synflow": _synflow_one, "naswot": _naswot_one, "snip": _gradient_one("snip"),
        "grad_norm": _gradient_one("grad_norm")}
