"""The command table and the import graph: no cycle between the command line and the packages it runs.

The graph is read from the source (``ast``, nothing imported): an edge for every ``import`` outside an
``if TYPE_CHECKING:`` block, plus the imports :mod:`ssl_pretrain.cli` makes at run time from the names in
:data:`ssl_pretrain.commands.COMMANDS` — the edges ``importlib`` would otherwise hide.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from ssl_pretrain.commands import COMMANDS

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ssl_pretrain", "finetune", "evaluation")  # DESIGN §2: imports flow evaluation → finetune → ssl_pretrain
Graph = dict[str, set[str]]


def module_files() -> dict[str, Path]:
    """Every module of the packages by dotted name (a package by its own name, for its ``__init__.py``)."""
    files = {}
    for path in (p for package in PACKAGES for p in (REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ``modules`` that ``name`` (a module or a name inside one) belongs to, if any."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _typing_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` blocks (imports that never run)."""
    blocks = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    return {id(node) for block in blocks for stmt in block.body for node in ast.walk(stmt)}


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement of ``module`` imports (relative imports made absolute)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph() -> Graph:
    """Module -> the package modules it imports (:func:`_imported`, resolved) and the cli's command modules."""
    modules = module_files()
    graph: Graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _typing_only(tree)
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in skip]
        names = [name for n in nodes for name in _imported(n, module, path.name == "__init__.py")]
        resolved = {_resolve(name, modules) for name in names}
        # `from pkg import submodule` imports the submodule; the edge to pkg itself is the parent package's own
        graph[module] = {r for r in resolved if r and r != module and not module.startswith(f"{r}.")}
    graph["ssl_pretrain.cli"] |= {module for module, _ in COMMANDS.values()}  # importlib.import_module at run time
    return graph


def cycles(graph: Graph) -> Iterator[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> Iterator[list[str]]:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                yield from visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                yield sorted(component)

    for v in sorted(graph):
        if v not in index:
            yield from visit(v)


def test_every_command_module_exists_and_has_run():
    for command, (module, help_) in COMMANDS.items():
        assert importlib.util.find_spec(module) is not None, command
        assert "def run(" in module_files()[module].read_text(), module
        assert help_ and "\n" not in help_, command


def test_the_command_line_is_in_no_import_cycle():
    """The cli runs the study command, whose stages run the commands: through a table both import, not each other."""
    graph = import_graph()
    assert "evaluation.study.command" in graph["ssl_pretrain.cli"]  # the run-time edge counts
    through_cli = [c for c in cycles(graph) if {"ssl_pretrain.cli", "ssl_pretrain.commands"} & set(c)]
    assert through_cli == []
    importers = sorted(module for module, targets in graph.items() if "ssl_pretrain.cli" in targets)
    assert importers == ["ssl_pretrain.__main__"]  # only `python -m ssl_pretrain`, as the console script


def test_no_import_cycle():
    """None at all: ``bssl study``'s plan-or-run choice lives in its own module (:mod:`evaluation.study.command`),
    so the plan, which composes the study's stages, is not imported back by the study."""
    assert list(cycles(import_graph())) == []


def test_the_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert list(cycles(graph)) == [["a", "b", "c"]]


def test_imports_flow_from_evaluation_to_finetune_to_ssl_pretrain():
    """DESIGN §2: no module imports a package downstream of its own (the cli's command table aside)."""
    layer = {package: i for i, package in enumerate(PACKAGES)}
    graph = import_graph()
    graph["ssl_pretrain.cli"] -= {module for module, _ in COMMANDS.values()}
    top = {module: layer[module.partition(".")[0]] for module in graph}
    upward = [(a, b) for a, targets in graph.items() for b in targets if top[b] > top[a]]
    assert upward == []


def test_the_study_orchestration_is_imported_by_nothing_it_runs():
    """``bssl study`` (:mod:`evaluation.study`) runs every other command and ends in the evaluation: it imports
    them, and no module outside it imports it (the cli reaches it through the command table only)."""
    graph = import_graph()
    graph["ssl_pretrain.cli"] -= {module for module, _ in COMMANDS.values()}
    inside = {module for module in graph if module == "evaluation.study" or module.startswith("evaluation.study.")}
    importers = sorted(module for module, targets in graph.items() if module not in inside and targets & inside)
    assert importers == []
    assert graph["evaluation.study.chain"] & {"evaluation.protocol"}  # it does import the evaluation's own check
