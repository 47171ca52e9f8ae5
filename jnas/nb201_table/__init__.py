"""An exhaustive NAS-Bench-201-space table on a small data set: ground truth for search quality.

Every unique cell of the 15,625 (:func:`canonical_form` merges cells that
compute the same function) is trained from scratch under one fixed
:class:`Protocol` for several seeds; :func:`build` does it resumably,
:func:`expand` writes one row per benchmark string, :func:`summary` reports
the spread and the seed-to-seed rank correlation; :func:`bench_workdir`
(``jnas bench``) scores a search's work directory on it. The table also loads with
:func:`jnas.estimation.tabular.load_table`. ``benchmarks/nb201_mnist1d_table.py``
is the command line.

Example:
  >>> from jnas.nb201_table import Protocol, build, expand, summary
  >>> build("runs/t", Protocol(), limit=40)  # doctest: +SKIP
  >>> summary(expand("runs/t"))["rank_correlation"]  # doctest: +SKIP
"""

from jnas.nb201_table.bench import NB201Table
from jnas.nb201_table.bench import bench_workdir
from jnas.nb201_table.bench import cell_figures
from jnas.nb201_table.bench import format_bench
from jnas.nb201_table.bench import load_nb201_table
from jnas.nb201_table.bench import rank_correlation
from jnas.nb201_table.bench import sample_cells
from jnas.nb201_table.build import RAW_COLUMNS
from jnas.nb201_table.build import build
from jnas.nb201_table.build import expand
from jnas.nb201_table.build import markdown
from jnas.nb201_table.build import read_raw
from jnas.nb201_table.build import summary
from jnas.nb201_table.build import work_order
from jnas.nb201_table.canonical import ZERO
from jnas.nb201_table.canonical import canonical_form
from jnas.nb201_table.canonical import genotype_at
from jnas.nb201_table.canonical import nb201_params
from jnas.nb201_table.canonical import unique_cells
from jnas.nb201_table.train import CellTrainer
from jnas.nb201_table.train import Protocol

__all__ = [
    "NB201Table",
    "RAW_COLUMNS",
    "bench_workdir",
    "cell_figures",
    "format_bench",
    "load_nb201_table",
    "rank_correlation",
    "sample_cells",
    "ZERO",
    "CellTrainer",
    "Protocol",
    "build",
    "canonical_form",
    "expand",
    "genotype_at",
    "markdown",
    "nb201_params",
    "read_raw",
    "summary",
    "unique_cells",
    "work_order",
]
