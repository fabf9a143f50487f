"""The package's shape: no import cycles (also none hidden inside functions), field names spelled once."""

from __future__ import annotations

import ast
from pathlib import Path

from llmwall import fields

PACKAGE = Path(__file__).resolve().parent.parent / "addon" / "llmwall"


#: Being rewritten on another branch; it will import the constants from fields.py then.
def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """Every llmwall module ``name`` imports, at module level or inside a function."""
    tree = ast.parse(MODULES[name].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in MODULES:
                    out.add(sub)  # "from pkg import module": the module, not the package's own code
                elif node.module in MODULES:
                    out.add(node.module)
    out.discard(name)
    return out


def test_no_import_cycles() -> None:
    graph = {name: imports(name) for name in MODULES}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == []


def test_the_layers_point_one_way() -> None:
    """providers and rules know nothing of the proxy; detectors nothing of providers or the proxy."""
    for name in MODULES:
        deps = imports(name)
        if name.startswith(("llmwall.providers", "llmwall.rules", "llmwall.detectors")):
            assert not {d for d in deps if d.startswith(("llmwall.proxy", "llmwall.analytics", "llmwall.cli"))}, name
        if name.startswith("llmwall.detectors"):
            assert not {d for d in deps if d.startswith("llmwall.providers")}, name


def test_field_names_are_spelled_only_in_fields_py() -> None:
    names = set(fields.SCHEMA) | {n[3:] for n in fields.SCHEMA if n.startswith(fields.LLM_PREFIX)}
    found = []
    for name, path in MODULES.items():
        if name == "llmwall.fields":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value}")
    assert found == []
