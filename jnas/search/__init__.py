"""The ``jnas search|train|info`` runs, one module per search family.

:mod:`jnas.run` is the public façade; this package holds the code behind it:

* :mod:`jnas.search.common`: spaces, supernets and genotypes a config names,
  and the persistent compilation cache.
* :mod:`jnas.search.workdir`: work directory claims, checkpoint metadata,
  stopping on a signal, the epoch loop and the alpha history.
* :mod:`jnas.search.retrain`: ``train`` (retraining from scratch) and ``info``.
* :mod:`jnas.search.gradient`: DARTS / GDAS / SNAS (optionally data-parallel)
  on cell spaces.
* :mod:`jnas.search.spos`: single-path one-shot training and evolution.
* :mod:`jnas.search.chain`: FBNet on chain spaces.
* :mod:`jnas.search.dispatch`: ``search``, which claims the work directory and
  picks the family.

Imports go one way, dispatch -> families -> retrain -> workdir/common, so no
module imports one that imports it back. This file imports nothing, so that
importing one module (an experiment config reading
:func:`jnas.search.spos.evolution_config`) loads only what that module needs.

Example:
  >>> from jnas.search.dispatch import search
  >>> search(load_config("experiments/darts_mnist1d.py"), "runs/x")  # doctest: +SKIP
"""
