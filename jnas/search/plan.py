"""What a search family (or the retraining) tells the one loop, :mod:`jnas.search.loop`.

A family is a :class:`Plan`: its carry (the pytree a step updates: a strategy
state, or the retraining's weights and optimizer), how many steps a unit (an
epoch, or one ask/tell round) has and which batch each step eats, the jitted
step, what a finished unit writes to the metrics, when the phase is done, and
at the end what was found (:class:`Found`). The loop owns everything else:
claiming the work directory, checkpoints and resuming them, signals, metric
files, results files and the retraining. Families import this module, never
the loop, so imports go one way.

Example:
  >>> class Count(Plan):
  ...   def __init__(self): self.step = lambda c: (c + 1, {"train_loss": 0.0})
  ...   def init(self): return 0
  ...   def done(self, unit): return unit >= 3
  >>> Count().steps(0), Count().label(0)
  (1, 'search unit 1')
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import numpy as np

from jnas.search.workdir import SEARCH_CKPT_DIR


class UnitEnd(NamedTuple):
  """What a finished unit gives the loop.

  ``line``: its metrics line (``None``: none is written); ``step``: the line's
  x-axis value; ``stop``: end the phase now (DARTS+'s early stop).
  """

  line: dict | None
  step: int
  stop: bool = False


@dataclasses.dataclass
class Found:
  """A search's result: the genotype (as JSON), its encoding for ``arch_params.npz`` (``None``
  writes none) and the summary's entries after ``genotype``."""

  genotype: Any
  arch_params: dict[str, np.ndarray] | None
  summary: dict[str, Any]


class Plan:
  """The defaults of a family's plan; a family overrides what differs.

  Attributes:
    phase: the metrics' ``phase`` and the TensorBoard folder (``search``, ``retrain``).
    what: the run's name in log lines and errors.
    ckpt_dir: checkpoint folder under the work directory.
    id_key: the metadata key holding the run's identity (config hash, retrain id).
    every_s: seconds between checkpoints at unit ends (0: after every unit).
    stop_within_unit: whether a SIGINT/SIGTERM stops after the step in flight (with a
      checkpoint of the position in the unit) or only at the unit's end.
    metric_keys: the step metrics summed over a unit (``None``: all).
    unit_bar: the name of a unit (``"epoch"``) for one progress bar over the
      phase (its length from :meth:`total_units`) instead of one per unit.
    step: ``step(carry, *batch) -> (carry, metrics)``, jitted by the plan.
    steps_per_call: other than 1, the loop runs a unit's steps in calls of
      :attr:`multi_step`, each ``steps_per_call`` steps long (0: the whole
      unit; aligned to the unit's start, the last one shorter), and a stop
      request takes effect between calls.
    multi_step: ``multi_step(carry, *stacked_batches) -> (carry, summed
      metrics)`` (:func:`jnas.search.common.scanned_steps` of the step), fed
      ``batch_at(slice(i, j))``.
  """

  phase: str = "search"
  what: str = "search"
  ckpt_dir: str = SEARCH_CKPT_DIR
  id_key: str = "config_hash"
  every_s: float = 0.0
  stop_within_unit: bool = True
  metric_keys: tuple[str, ...] | None = None
  unit_bar: str | None = None
  step: Callable[..., tuple[Any, dict]]
  steps_per_call: int = 1
  multi_step: Callable[..., tuple[Any, dict]] | None = None

  def init(self) -> Any:
    """A fresh carry."""
    raise NotImplementedError

  def done(self, unit: int) -> bool:
    """Whether the phase is over once ``unit`` units ran."""
    raise NotImplementedError

  def total_units(self) -> int | None:
    """How many units the phase has, when known in advance (for :attr:`unit_bar`)."""
    return None

  def use_scan(self, per_call: int, step: Callable[..., tuple[Any, dict]], **scan_kw) -> None:
    """Sets :attr:`steps_per_call` to ``per_call`` and, other than 1, :attr:`multi_step` to
    ``step`` scanned (:func:`jnas.search.common.scanned_steps`, given ``scan_kw``)."""
    from jnas.search.common import scanned_steps  # noqa: PLC0415 (common imports the spaces)

    self.steps_per_call = per_call
    if per_call != 1:
      self.multi_step = scanned_steps(step, **scan_kw)

  def bar_unit(self) -> str | None:
    """The unit of one progress bar over the phase: :attr:`unit_bar`, or ``"epoch"`` where
    each unit runs as one compiled call (``steps_per_call`` 0), whose step bar would jump
    from empty to full."""
    if self.unit_bar is not None:
      return self.unit_bar
    whole = self.multi_step is not None and self.steps_per_call == 0
    return "epoch" if whole and self.total_units() is not None else None

  def steps(self, unit: int) -> int:
    """Steps in unit ``unit``."""
    del unit
    return 1

  def batches(self, unit: int) -> Callable[[int], tuple]:
    """``batch_at(i)``: the arguments after the carry of the unit's step ``i`` (with
    :attr:`steps_per_call` > 1 also ``batch_at(slice(i, j))``: steps ``i..j-1`` stacked)."""
    del unit
    return lambda i: ()

  def label(self, unit: int) -> str:
    """Names unit ``unit`` in progress bars and errors."""
    return f"{self.phase} unit {unit + 1}"

  def end_unit(self, carry: Any, unit: int, means: dict[str, float]) -> UnitEnd:
    """Turns the unit's mean metrics into its line (``unit`` counts from 0)."""
    return UnitEnd({"epoch": unit + 1, **means}, unit + 1)

  # ---- Checkpoints. ----

  def target(self, carry: Any) -> Any:
    """The restore target (``None``: arrays as saved)."""
    return {"strategy": carry}

  def to_tree(self, carry: Any) -> tuple[Any, dict]:
    """``(pytree to save, extra metadata)``."""
    return {"strategy": carry}, {}

  def from_tree(self, tree: Any, meta: dict, fresh: Any) -> Any:
    """The carry from a restored pytree (``fresh``: a new carry, for its structure)."""
    del meta, fresh
    return tree["strategy"]

  def checkpoint_step(self, ticks: int, unit: int) -> int:
    """The checkpoint's number: steps run so far, by default."""
    del unit
    return ticks

  def save_meta(self) -> dict:
    """The plan's own resume data (JSON), saved with each checkpoint."""
    return {}

  def load_meta(self, meta: dict) -> None:
    """Takes back :meth:`save_meta`'s data on resume (before :meth:`from_tree`)."""
    del meta

  def started(self, wd: Any) -> None:
    """Called once the metric files hold the checkpoint's lines (rewrite own files here)."""
    del wd

  def foreign(self, where: Any, theirs: Any, ours: str) -> str:
    """The error for a checkpoint of another run."""
    return f"checkpoint {where} belongs to another config (hash {theirs}, this config {ours})"
