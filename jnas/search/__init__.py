"""The ``jnas search|train|info`` runs, one module per search family.

:mod:`jnas.run` is the public façade; this package holds the code behind it:

* :mod:`jnas.search.loop`: the one loop: ``search`` and ``train`` claim the
  work directory, run a family's plan step by step with checkpoints, resume,
  metrics and results, and retrain.
* :mod:`jnas.search.plan`: what a family tells the loop (:class:`~jnas.search.plan.Plan`).
* The families, one plan each: :mod:`jnas.search.gradient` (DARTS / GDAS /
  SNAS, optionally data-parallel, on cell spaces), :mod:`jnas.search.spos`
  (single-path training, then evolution), :mod:`jnas.search.chain` with
  :mod:`jnas.search.fbnet` (FBNet on chain spaces), :mod:`jnas.search.ask_tell`
  (the sample-based strategies with a table, scratch or supernet estimator)
  and :mod:`jnas.search.retrain` (retraining; also ``info``).
* :mod:`jnas.search.tabular` and :mod:`jnas.search.tabular_front`: in-memory
  replays of the strategies over a benchmark table (``jnas tabular``).
* :mod:`jnas.search.common`: spaces, supernets and genotypes a config names,
  and the persistent compilation cache; :mod:`jnas.search.workdir`: work
  directory claims and locks, stopping on a signal, the checkpoint clock.

Imports go one way, loop -> families -> plan -> workdir/common, so no
module imports one that imports it back. This file imports nothing, so that
importing one module (an experiment config reading
:func:`jnas.search.spos.evolution_config`) loads only what that module needs.

Example:
  >>> from jnas.search.loop import search
  >>> search(load_config("experiments/darts_mnist1d.py"), "runs/x")  # doctest: +SKIP
"""
