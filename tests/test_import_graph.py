"""jnas's packages import in one direction, and no search module is part of an import circle.

Read from the source (function-level imports included, since a lazy import
back is still a circle), so this runs without importing JAX.
"""

import ast
from pathlib import Path

JNAS = Path(__file__).resolve().parents[1] / "jnas"


def _module_names() -> dict[str, Path]:
  names = {}
  for path in JNAS.rglob("*.py"):
    parts = path.relative_to(JNAS.parent).with_suffix("").parts
    names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return names


def _import_graph() -> dict[str, set[str]]:
  names = _module_names()

  def known(name: str | None) -> str | None:
    while name and name not in names:
      name = name.rpartition(".")[0]
    return name or None

  graph: dict[str, set[str]] = {m: set() for m in names}
  for module, path in names.items():
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module
        if node.level:
          base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
          base = f"{base}.{node.module}" if node.module else base
        targets = [base] + [f"{base}.{a.name}" for a in node.names]
      else:
        continue
      graph[module] |= {t for t in map(known, targets) if t and t != module}
  return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for nxt in graph[todo.pop()] - seen:
      seen.add(nxt)
      todo.append(nxt)
  return seen


def test_run_and_search_modules_are_in_no_import_circle():
  graph = _import_graph()
  ours = [m for m in graph if m == "jnas.run" or m.startswith("jnas.search.")]
  assert "jnas.search.loop" in ours
  # Each offender, with the modules of its circle.
  circles = {m: sorted(n for n in _reaches(graph, m) if m in _reaches(graph, n))
             for m in ours if m in _reaches(graph, m)}
  assert not circles, circles


# jnas's packages from the bottom up (NAS's three parts: spaces, then estimation, then the
# strategies and the search loops that use both). A package imports only from its own
# layer's lower rows; packages on one row do not import each other.
LAYERS = (
    ("jnas", "ops", "config", "data", "checkpoint"),
    ("utils", "parallel", "spaces", "config_rules"),
    ("train",),          # discrete networks (retraining, export)
    ("supernet",),       # mixed-op modules built from the discrete networks' ops
    ("estimation",),     # how good is a pick: tables, scratch training, proxies, latency, fronts
    ("strategies",),     # pure ask/tell and gradient strategies
    ("search",),         # every search loop, claiming and resuming a work directory
    ("run", "validate", "plot", "score_cli", "nb201_table", "cli_support"),
    ("compare",),
    ("cli",),
    ("__main__",),
)


def _package(module: str) -> str:
  return module.split(".")[1] if "." in module else module


def test_packages_import_in_one_direction():
  rank = {p: i for i, row in enumerate(LAYERS) for p in row}
  graph = _import_graph()
  unplaced = sorted({_package(m) for m in graph} - set(rank))
  assert not unplaced, f"packages missing from LAYERS: {unplaced}"
  upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                  if _package(t) != _package(m) and rank[_package(t)] >= rank[_package(m)])
  assert not upward, upward
