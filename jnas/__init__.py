"""jnas: neural architecture search in JAX.

Search spaces are data (:mod:`jnas.spaces`), supernets are Flax NNX modules
whose forward pass takes the architecture encoding as an argument
(:mod:`jnas.supernet`), strategies are pure functions over explicit states
(:mod:`jnas.strategies`), and derived architectures retrain from scratch
(:mod:`jnas.train`). The CLI (``jnas search|train|info``) lives in
:mod:`jnas.cli`; :mod:`jnas.run` holds the same entry points for notebooks.

Importing ``jnas`` itself is cheap: it imports neither JAX nor Flax.
"""

__version__ = "0.1.0"
