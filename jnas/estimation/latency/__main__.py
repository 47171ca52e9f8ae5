"""``python -m jnas.estimation.latency CONFIG_JSON OUT``: measure the table a config asks for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from jnas.estimation.latency.measure import build_latency_table, latency_settings
from jnas.estimation.latency.timing import set_cpu_threads


def _main(argv: Sequence[str]) -> None:
  """``python -m jnas.estimation.latency CONFIG_JSON OUT``: measure the table a config asks for.

  Used by ``jnas search`` on chain spaces; it runs in its own process so the
  config's ``latency.cpu_threads`` applies before XLA starts.
  """
  import ml_collections

  if len(argv) != 2:
    raise SystemExit("usage: python -m jnas.estimation.latency CONFIG_JSON OUT_JSON")
  config = ml_collections.ConfigDict(json.loads(Path(argv[0]).read_text()))
  st = latency_settings(config)
  set_cpu_threads(st["cpu_threads"])
  from jnas.ops.primitives import set_depthwise_impl
  from jnas.spaces.chain import space_from_config

  if "model" in config and "depthwise_impl" in config.model:
    set_depthwise_impl(config.model.depthwise_impl)
  table = build_latency_table(space_from_config(config), st["batch_size"], st["dtype"],
                              st["repeats"], seed=int(config.get("seed", 0)),
                              stat=st["statistic"], clock=st["clock"])
  table.save(argv[1])


if __name__ == "__main__":
  import sys

  _main(sys.argv[1:])
