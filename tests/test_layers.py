"""The layers of the tree, enforced by reading every module's imports (function-local ones
included) with `ast`:

- the queue library (`supervisor.queue`) imports nothing of the daemon: only itself and the
  shared configuration (`supervisor.config`);
- the API imports nothing of the daemon: only the queue library, the shared configuration
  and the metric definitions both serve on `/metrics` (`supervisor.metricdefs`, which
  imports only the queue library);
- the child (`ingest_worker`) imports neither `supervisor` nor `api`;
- no module imports a module that imports it back, directly or through others.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("supervisor", "api", "ingest_worker")

# What outside its own package each layer may import from `supervisor`.
# `supervisor.secretfiles` (secrets read from *_FILE variables and systemd credentials)
# belongs to the shared configuration and imports nothing of the project.
QUEUE_MAY_IMPORT = ("supervisor.queue", "supervisor.config", "supervisor.secretfiles")
API_MAY_IMPORT = (
    "supervisor.queue",
    "supervisor.config",
    "supervisor.secretfiles",
    "supervisor.metricdefs",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


MODULES = modules()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except those under `if TYPE_CHECKING:` (never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for other in node.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str, path: Path) -> Iterator[str]:
    """Every module `name` imports when it runs (at any depth of its code, not under
    `if TYPE_CHECKING:`), as absolute names; for `from package import x` the submodule
    `package.x` when there is one."""
    is_package = path.name == "__init__.py"
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join([*parts[:keep], *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in MODULES else base


def project_imports(name: str) -> set[str]:
    return {m for m in imports_of(name, MODULES[name]) if m.split(".")[0] in PACKAGES}


def _within(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def _breaches(layer: str, allowed: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for name in sorted(MODULES):
        if not _within(name, (layer,)):
            continue
        for imported in sorted(project_imports(name)):
            if _within(imported, forbidden) and not _within(imported, allowed):
                out.append(f"{name} imports {imported}")
    return out


def test_the_tree_is_found() -> None:
    assert {
        "supervisor.queue.jobqueue",
        "supervisor.daemon",
        "api.app",
        "ingest_worker.cli",
    } <= set(MODULES)


def test_the_queue_library_imports_nothing_of_the_daemon() -> None:
    assert _breaches("supervisor.queue", QUEUE_MAY_IMPORT, ("supervisor", "api")) == []


def test_the_shared_configuration_imports_only_the_queue_library() -> None:
    allowed = ("supervisor.queue", "supervisor.secretfiles")
    assert _breaches("supervisor.config", allowed, ("supervisor", "api")) == []
    assert project_imports("supervisor.secretfiles") == set()


def test_the_api_imports_nothing_of_the_daemon() -> None:
    # `supervisor` itself is the package's __init__ (its version), which imports nothing.
    assert project_imports("supervisor") == set()
    allowed = (*API_MAY_IMPORT, "supervisor.__init__")
    breaches = [
        b for b in _breaches("api", allowed, ("supervisor",)) if not b.endswith(" supervisor")
    ]
    assert breaches == []


def test_the_metric_definitions_import_nothing_of_the_daemon() -> None:
    """Only the queue library (the rule of a serving supervisor), which imports nothing of
    the daemon either: the API serves these definitions."""
    imported = project_imports("supervisor.metricdefs")
    assert {m for m in imported if not m.startswith("supervisor.queue")} == set()


def test_the_child_imports_neither_the_supervisor_nor_the_api() -> None:
    assert _breaches("ingest_worker", (), ("supervisor", "api")) == []


def test_nothing_is_imported_by_what_it_imports() -> None:
    graph = {name: project_imports(name) & set(MODULES) for name in MODULES}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
