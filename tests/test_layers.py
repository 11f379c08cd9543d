"""The package's layers go one way, and the config loads without torch.

The import graph is read from the source (every ``import`` and ``from ... import``, those inside
functions and ``TYPE_CHECKING`` blocks included), not from what one run happens to import, so a
lazy import that closes a cycle or reaches up a layer is caught too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import splitsearch

PACKAGE = Path(splitsearch.__file__).parent
# The package's rooms, bottom-up, each a tuple of the top-level modules and packages of one layer:
# a module may import its own layer and the layers below it, never one above.  Every top-level
# module of the package is in exactly one layer (test_every_module_is_in_a_layer).
LAYERS = (
    ("splitsearch.errors", "splitsearch.units", "splitsearch.stats", "splitsearch.metrics", "splitsearch.lazy"),
    ("splitsearch.blocks",),
    ("splitsearch.models",),
    ("splitsearch.data",),
    ("splitsearch.config",),
    ("splitsearch.split", "splitsearch.build"),
    ("splitsearch.ensemble",),
    ("splitsearch.cost", "splitsearch.deploy"),  # measure or export a candidate: never train one
    ("splitsearch.store",),  # the database: no torch (test_the_store_loads_without_torch)
    ("splitsearch.train",),
    ("splitsearch.search",),
    ("splitsearch.report", "splitsearch.dashboard"),
    ("splitsearch.cli",),
)


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that importing ``module`` runs: each named module and the packages on its way.

    A package that holds ``module`` itself is left out: it is already being imported.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:end]) for end in range(1, len(parts) + 1)}
    return {name for name in found & known if not f"{module}.".startswith(f"{name}.")}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imports(module, path, set(modules)) for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in import order, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph[module]):
            if (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if (cycle := visit(module)) is not None:
            return cycle
    return None


def layer(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(f"{prefix}.") for prefix in prefixes):
            return index
    return None


def test_the_import_graph_has_no_cycle():
    assert find_cycle(import_graph()) is None


def test_find_cycle_finds_a_cycle_through_a_package():
    graph = {"a": {"a.b"}, "a.b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "a.b", "c", "a"]


def test_no_layer_imports_a_layer_above_it():
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if layer(module) is not None and layer(target) is not None and layer(target) > layer(module)
    )
    assert upward == []


def test_every_layer_names_modules_of_the_package():
    """So that a renamed package cannot leave the layer check above with nothing to check."""
    graph = import_graph()
    assert all(prefix in graph for prefixes in LAYERS for prefix in prefixes)
    transformations = ("splitsearch.split.semantic", "splitsearch.split.grouping", "splitsearch.split.sequential")
    assert all(layer(module) == layer("splitsearch.models") + 3 for module in transformations)


def test_every_module_is_in_a_layer():
    """A new top-level module or package must take its place in LAYERS, or nothing checks its imports."""
    assert sorted(module for module in import_graph() if module != "splitsearch" and layer(module) is None) == []


def top_level(module: str) -> str:
    """``splitsearch.search.run`` -> ``splitsearch.search``: the room a module lives in."""
    return ".".join(module.split(".")[:2])


def test_the_package_level_import_graph_has_no_cycle():
    """Rooms import one way: no two packages import each other, even through different modules."""
    rooms: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if module != "splitsearch":
            rooms.setdefault(top_level(module), set()).update(
                top_level(target) for target in targets if target != "splitsearch" and top_level(target) != top_level(module))
    assert find_cycle(rooms) is None


def _without_torch(statements: str, heavy: tuple[str, ...] = ("torch",)) -> None:
    check = (f"import sys; {statements}; imported = [name for name in {heavy!r} if name in sys.modules]; "
             "assert not imported, f'{imported} imported'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", check], env=env, check=True)


def test_the_config_loads_and_checks_a_candidate_without_torch():
    _without_torch("from splitsearch.config import SplitConfig; "
                   "SplitConfig(arch='wrn16_8', groups=2, split_depth='deep', dataset='cifar100')")


def test_the_command_line_and_its_help_load_without_torch():
    """``splitsearch --help`` answers at once: commands import torch (and the database's and Optuna's
    libraries, 0.3-0.7 s more) only when they run."""
    _without_torch("from splitsearch.cli import main; main(['--help']); main(['run', '--help'])",
                   heavy=("torch", "sqlalchemy", "optuna"))


def test_the_store_loads_without_torch():
    """The store talks to the database only: a tool that reads results needs no torch."""
    _without_torch("from splitsearch.store import Store, upgrade; from splitsearch.store.storage import open_storage; "
                   "from splitsearch.store.retry import StoragePatience")
