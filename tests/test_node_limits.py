"""A node under a hostile or broken world: test hooks that stay off, storage
that fails, limits a stranger or a member cannot talk past, and a node that
issues alone but never equivocates after a restore.

Nodes run in-process on their real TLS ports (port 0 where the test needs no
peer to reach them); peers, where a case needs one, are played by the test
with the consortium's real keys and certificates."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keys.layout import NodeConfig, init_consortium
from node.server import Node

pytestmark = pytest.mark.timeout(120)


def _consortium(root: Path, carriers: int = 2, internet: int = 0) -> Path:
    d = root / "c"
    init_consortium(d, carriers=carriers, internet=internet, base_port=_free_base(root),
                    now=datetime.now(UTC))
    return d


def _free_base(root: Path) -> int:
    from node.localnet import free_port_block

    return free_port_block(12)


# ------------------------------------------------------------------ point 3: the refuse hook


def test_refuse_hook_is_off_in_a_production_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On main the MARKEX_REFUSE_FILE variable alone made any node refuse the
    peers listed in the file, silently. Now only the test-only argument turns
    the hook on, and the node logs that it is on."""
    d = _consortium(tmp_path)
    refuse = tmp_path / "refuse"
    refuse.write_text("carrier-2\n")
    monkeypatch.setenv("MARKEX_REFUSE_FILE", str(refuse))
    cfg = NodeConfig.for_participant(d, "carrier-1")
    with caplog.at_level(logging.WARNING, logger="markex.node"):
        node = Node(cfg)
        try:
            assert not node.refuses("carrier-2")
        finally:
            node.store.close()
        assert "test-hook" not in caplog.text
        node = Node(cfg, refuse_file=refuse)
        try:
            assert node.refuses("carrier-2")
            assert not node.refuses("institute")
        finally:
            node.store.close()
    assert "test-hook" in caplog.text and str(refuse) in caplog.text


def test_node_run_takes_the_hook_only_as_a_test_flag() -> None:
    """`markex node run` has the hook as an explicit test-only flag, off by default."""
    from node import cli

    parser = cli.build_parser()
    plain = parser.parse_args(["node", "run", "--as", "carrier-1"])
    assert plain.test_refuse_file is None and plain.restored is False
    hooked = parser.parse_args(["node", "run", "--as", "carrier-1", "--test-refuse-file", "f"])
    assert hooked.test_refuse_file == "f"
