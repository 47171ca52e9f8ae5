"""Latency lookup tables measured on the current JAX backend, and latency prediction.

The best network differs per device, so jnas measures instead of assuming:
:func:`build_latency_table` compiles every candidate op at every block of a
chain space, on its real input shape, and times it (forward pass, inference
mode) on the backend JAX runs on here: CPU, GPU or TPU. A network's predicted
latency is the sum of its ops' entries plus the fixed stem and head
(:func:`predicted_latency`); under a relaxed encoding the same sum weighted by
the encoding is differentiable (:func:`expected_latency`), which is what
FBNet's loss needs.

**Timing.** Each op is jitted alone with its weights as arguments, warmed up,
then timed ``repeats`` times; each repeat runs the op ``number`` times (enough
for about a millisecond) and waits for every result
(``jax.block_until_ready``), and the entry is the median per-call time. A
jitted call has a fixed dispatch cost that a whole network pays once, not once
per op: the table measures that cost (a jitted call doing next to nothing on
the same input), subtracts it from each entry and adds it back once per
network.

**Files.** A table is JSON with the space name and fingerprint, every block's
input and output shapes, the device (kind, platform, CPU model), backend,
dtype, batch size, repeats and JAX version. :func:`load_latency_table` refuses
a table made for another space, shape, batch size or dtype, with one line
naming the mismatch. Tables made elsewhere load too if they carry ``space``,
``positions`` (input shapes) and per-op ``entries`` (see :func:`table_from_json`).

The code is split by concern: ``timing`` (timing compiled calls),
``measure`` (building tables, whole-network latencies, validation),
``table`` (the record, its JSON files and fit checks) and ``predict``
(predicted and expected latency). Import from this package.
"""

from jnas.estimation.latency.measure import build_latency_table
from jnas.estimation.latency.measure import latency_settings
from jnas.estimation.latency.measure import measure_latencies
from jnas.estimation.latency.measure import measure_latency
from jnas.estimation.latency.measure import rank_correlations
from jnas.estimation.latency.measure import validate_table
from jnas.estimation.latency.predict import expected_latency
from jnas.estimation.latency.predict import predicted_latency
from jnas.estimation.latency.table import FORMAT
from jnas.estimation.latency.table import LatencyTable
from jnas.estimation.latency.table import check_table
from jnas.estimation.latency.table import load_latency_table
from jnas.estimation.latency.table import table_from_json
from jnas.estimation.latency.timing import CLOCKS
from jnas.estimation.latency.timing import DTYPES
from jnas.estimation.latency.timing import device_description
from jnas.estimation.latency.timing import placeholder_weights
from jnas.estimation.latency.timing import set_cpu_threads
from jnas.estimation.latency.timing import time_call
from jnas.estimation.latency.timing import time_calls
