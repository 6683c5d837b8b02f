"""The import rules of style.md: `ledger` is pure (no grpc, no node), `keys`
imports only cryptography and the standard library, generated protobuf types
stay at the edge."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports(package: str) -> dict[str, set[str]]:
    """Each module of `package` (subpackages too, by path) -> the top-level
    names it imports."""
    out: dict[str, set[str]] = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(f.relative_to(ROOT / package))] = names
    return out


@pytest.mark.parametrize("name,mods", sorted(imports("ledger").items()))
def test_ledger_is_pure(name: str, mods: set[str]) -> None:
    assert not mods & {"grpc", "grpc_health", "grpc_reflection", "node", "prometheus_client"}, name


@pytest.mark.parametrize("name,mods", sorted(imports("keys").items()))
def test_keys_imports_only_cryptography(name: str, mods: set[str]) -> None:
    allowed = set(sys.stdlib_module_names) | {"cryptography", "keys", "__future__"}
    assert mods <= allowed, f"{name} imports {mods - allowed}"


def test_only_record_parsing_touches_generated_types_in_ledger() -> None:
    users = {n for n, mods in imports("ledger").items() if "markex" in mods}
    # the record codec and each payload type's own codec (ledger/payloads/)
    assert users <= {"record.py"} | {n for n in users if n.startswith("payloads/")}, users


def node_import_graph() -> dict[str, set[str]]:
    """node/'s modules -> the node/ modules each imports (anywhere in the file:
    at the top, inside a function, or under TYPE_CHECKING)."""
    mods = {f.stem for f in (ROOT / "node").glob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m in mods:
        tree = ast.parse((ROOT / "node" / f"{m}.py").read_text())
        for n in ast.walk(tree):
            names: list[str] = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module == "node" and n.level == 0:
                names = [f"node.{a.name}" for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                names = [n.module]
            elif isinstance(n, ast.ImportFrom) and n.level == 1:  # from . import x / from .x import
                names = [f"node.{n.module}"] if n.module else [f"node.{a.name}" for a in n.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "node" and len(parts) > 1 and parts[1] in mods and parts[1] != m:
                    graph[m].add(parts[1])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as [a, b, ..., a], or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for nxt in sorted(graph[m]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)) is not None:
            return found
    return None


def test_find_cycle_names_the_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_node_has_no_import_circle() -> None:
    graph = node_import_graph()
    assert "server" in graph and "core" in graph["server"]  # the graph sees real imports
    cycle = find_cycle(graph)
    assert cycle is None, "import circle in node/: " + " -> ".join(cycle or [])


# The modules that run a node (`markex node run`); when that command moves to
# another module, name that one here instead.
RUNS_A_NODE = {"issuecli"}  # `markex node run` (node/issuecli.py)


def test_no_node_part_imports_the_composition_root() -> None:
    """Node (node/server.py) wires the parts; none of them reaches back to it
    (only the command line, which runs a node, imports it)."""
    users = {m for m, deps in node_import_graph().items() if "server" in deps}
    assert users <= RUNS_A_NODE, users


def test_the_client_side_verifier_loads_without_grpc_or_node() -> None:
    """An app imports ledger.verify to check answers; no gRPC, no server code comes with it."""
    import subprocess

    code = (
        "import sys, ledger.verify; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'node')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
