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
    out: dict[str, set[str]] = {}
    for f in sorted((ROOT / package).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[f.name] = names
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
    assert users <= {"record.py"}
