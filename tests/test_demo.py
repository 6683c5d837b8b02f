"""`markex demo` end to end at a small size: six processes, the stories, equal
roots, verified lookups, audits, and every process stopped."""

from __future__ import annotations

import pytest

from node.demo import run_demo

pytestmark = pytest.mark.timeout(300)


def test_demo_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(numbers=150) == 0
    out = capsys.readouterr().out
    assert "demo passed" in out
    assert "same records on every node: yes; same view root on every node: yes" in out
    assert "set_aside=[internet-1:appeal upheld]" in out
    assert "reassigned" in out and "withdrawn" in out
    assert "NOT verified" not in out.split("the national view, looked up")[1]
    for repr_ in ("None", "True", "False"):  # plain words, no Python reprs
        assert repr_ not in out, repr_
