"""A small apply's fixed costs (a node in a mesh applies groups of one or a few
records): the view's vector written by hand, one write batch an apply, a
point read for a one-key multi-get, the top of the tree rehashed along one
path when one bucket changed. Each gives what the general code gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import viewtree
from ledger.errors import StorageFailure
from ledger.store import Store
from ledger.view import NationalView, resolve
from ledger.view.stored import encode_vector
from tests.test_view import CONS, RICH


@given(st.dictionaries(st.text(max_size=8), st.integers(min_value=-(2**70), max_value=2**70)
                       | st.booleans(), max_size=12))
def test_the_vector_is_written_as_json_dumps_writes_it(vector: dict[str, int]) -> None:
    want = json.dumps(dict(sorted(vector.items())), separators=(",", ":")).encode("ascii")
    assert encode_vector(vector) == want


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(min_value=0, max_value=10), data=st.data())
def test_one_changed_bucket_gives_the_root_many_give(bits: int, data: st.DataObject) -> None:
    """Rehashed after every single-bucket change (the one-path walk) or after
    all of them at once (the level-by-level sweep), or built from the final
    buckets alone: one root."""
    buckets = st.integers(min_value=0, max_value=(1 << bits) - 1)
    values = st.one_of(st.just(viewtree.EMPTY), st.binary(min_size=32, max_size=32))
    changes = data.draw(st.lists(st.tuples(buckets, values), min_size=1, max_size=40))
    step, swept, final = (viewtree.TopTree(bits) for _ in range(3))
    for b, h in changes:
        step.update({b: h})
        step.root()
        swept.update({b: h})
    last = dict(changes)
    final.update(last)
    assert step.root() == swept.root() == final.root()
    for b in last:
        assert step.path(b) == final.path(b)


def test_an_apply_builds_one_write_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "db")
    try:
        view = NationalView.open(store, CONS)
        made = []
        batch = store.batch

        def counted() -> Any:
            made.append(1)
            return batch()

        monkeypatch.setattr(store, "batch", counted)
        for rec in RICH.records:
            view.apply([rec])
        assert len(made) == len(RICH.records)
        monkeypatch.undo()
        assert view.root() == resolve(RICH.records, CONS).root()
    finally:
        store.close()


def test_a_one_key_multi_get_is_a_point_read(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    try:
        store.put("view", b"+8613800000001", b"entry", sync=False)
        assert store.get_many("view", [b"+8613800000001"]) == [b"entry"]
        assert store.get_many("view", [b"+8613800000002"]) == [None]
        assert store.get_many("view", [b"+8613800000001", b"+8613800000002"]) == [b"entry", None]

        class Broken:
            def get(self, key: Any) -> None:
                raise RuntimeError("I/O error")

        store._cfs["view"] = Broken()  # type: ignore[assignment]
        with pytest.raises(StorageFailure, match="read from view failed"):
            store.get_many("view", [b"+8613800000001"])
    finally:
        store.close()
