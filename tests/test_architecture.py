"""The house plan holds: ARCHITECTURE.md names every module, no module imports in a
circle, the pure cores do no I/O, and only ``store/`` speaks SQL (issue 20).

Static checks of the source (``ast``), no imports run: each fails with the modules
that broke the rule, so a reader knows where to look.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PKG = SRC / "trygg"


def _modules() -> dict[str, Path]:
    """Dotted name -> file, every module of trygg (packages by their __init__)."""
    out: dict[str, Path] = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _top_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: the module's own body, its
    ``try``/``if`` blocks, but not ``if TYPE_CHECKING`` nor function bodies."""
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" in ast.unparse(node.test):
                todo.extend(node.orelse)
            else:
                todo.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            todo.extend(node.body + node.orelse + node.finalbody)
            for h in node.handlers:
                todo.extend(h.body)


def _imported(modules: dict[str, Path], name: str, tree: ast.Module) -> Iterator[str]:
    """The trygg modules ``name`` imports at its top level."""
    package = name if modules[name].name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in _top_level_imports(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules:
                    yield a.name
            continue
        base = node.module or ""
        if node.level:  # relative: from the package upwards
            up = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*up, base] if base else up)
        for a in node.names:
            full = f"{base}.{a.name}"
            if full in modules:
                yield full  # a submodule
            elif base in modules:
                yield base


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = {m for m in _imported(modules, name, tree) if m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_parent(a: str, b: str) -> bool:
    """``a`` is a package that ``b`` lives in: importing b runs a's __init__ anyway,
    so a package importing its own submodules is not a circle a reader must untangle."""
    return b.startswith(a + ".")


def test_no_module_imports_in_a_circle() -> None:
    graph = _graph()
    # a package's __init__ importing its submodules (and they the package) is not a
    # circle between concepts: drop the edges between a package and its members
    pruned = {
        a: {b for b in bs if not _is_package_parent(a, b) and not _is_package_parent(b, a)}
        for a, bs in graph.items()
    }
    assert _cycles(pruned) == [], "modules that import each other at their top level"


def test_the_checks_can_fail() -> None:
    """The checks can fail: a made-up circle is found, and SQL text is told from prose."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert _SQL.search("SELECT COUNT(*) FROM EVENTS WHERE X")
    assert not _SQL.search("SELECT A CATALOGUE VERSION")


def _named_in_architecture() -> tuple[str, set[str]]:
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    return text, set(re.findall(r"`([^`]+)`", text))


def test_architecture_names_every_module() -> None:
    """Each module is named in ARCHITECTURE.md's table: by its path
    (``trygg/runner/spool.py``), or by its name in a row that names its package's
    folder (``trygg/rules/kinds/`` (``base``, ``event``, ...))."""
    text, _ = _named_in_architecture()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    missing = []
    for path in _modules().values():
        rel = path.relative_to(SRC).as_posix()
        folder = rel.rsplit("/", 1)[0] + "/"
        if path.name == "__init__.py" and f"`{folder}" in text:
            continue  # a package's own front: its folder's rows name it
        stem = path.stem
        if f"`{rel}`" in text:
            continue
        if any(folder in row and re.search(rf"`{re.escape(stem)}(\.py)?`", row) for row in rows):
            continue
        missing.append(rel)
    assert missing == [], "modules ARCHITECTURE.md does not name"


def _imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):  # anywhere, function bodies too
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


# What the pure cores may not reach for: a database, the network, other processes,
# the tools that read the database, the runners.
_IO = ("psycopg", "psycopg_pool", "httpx", "aiohttp", "paho", "socket", "subprocess", "faust")
_OUTER = ("trygg.store", "trygg.tuning", "trygg.runner", "trygg.api", "trygg.distributed")


def test_the_pure_cores_do_no_io() -> None:
    """rules/ and alerts/ take a clock and return decisions (ARCHITECTURE.md): they
    import no database or network client and none of the stages around them."""
    bad = []
    for folder in ("rules", "alerts"):
        for path in sorted((PKG / folder).rglob("*.py")):
            for name in _imports_of(path):
                top = name.split(".")[0]
                if top in _IO or any(name == o or name.startswith(o + ".") for o in _OUTER):
                    bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


_SQL = re.compile(r"\b(SELECT\s+.+\s+FROM|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET)\b", re.S)


def test_only_store_speaks_sql() -> None:
    """SQL text and psycopg calls stand in store/ alone: everyone else calls a
    store function named for what it means. (Connecting is allowed elsewhere:
    a runner owns its connections, and hands them to store functions.)"""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("trygg/store/") or rel == "trygg/devenv.py":
            continue  # devenv creates the private test databases themselves
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if _SQL.search(node.value.upper()) and not _is_docstring(tree, node):
                    bad.append(f"{rel}:{node.lineno}")
            elif isinstance(node, ast.Attribute) and node.attr in ("execute", "executemany"):
                bad.append(f"{rel}:{node.lineno} .{node.attr}(")
    assert bad == []


def _is_docstring(tree: ast.Module, const: ast.Constant) -> bool:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and first.value is const:
                return True
    return False
