"""The README's "Using it" block, word for word, as a new user runs it: bash,
in a fresh folder, `markex` on the PATH, six real node processes. Every
command must succeed (the only change: `consortium init` gets free ports, so
the test does not collide with anything listening on the README's 7400)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parent.parent
INIT = "markex consortium init ./c"
NUMBER = "+8613812345678"


def using_it_block() -> str:
    """The first ```bash block of the README's "## Using it" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"^```bash\n(.*?)^```$", section, re.S | re.M)
    assert m, "no ```bash block in the README's Using it section"
    return m.group(1)


def units(block: str) -> list[str]:
    """The block's commands: one a line, a `for ... done` loop as one."""
    out: list[str] = []
    loop: list[str] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        if loop or line.startswith(("for ", "while ")):
            loop.append(line)
            if line.strip() == "done":
                out.append("\n".join(loop))
                loop = []
            continue
        out.append(line)
    assert not loop, "an unterminated loop"
    return out


def free_base_port(count: int = 16) -> int:
    """A base port with `count` free ports after it (the consortium's nodes' ports)."""
    for _ in range(50):
        base = random.randrange(20_000, 30_000, 2)
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def test_the_using_it_block_parses_into_commands() -> None:
    cmds = units(using_it_block())
    assert cmds[0].startswith(INIT) and cmds[-1].startswith("kill ")
    # the three mistakes are gone: a proof within the log, a reassignment
    # after the marks it sets aside, lookups only once the nodes run and hold the record
    assert not any("--size 10" in c for c in cmds)
    assert any("reassign" in c and "$(date -u" in c for c in cmds)
    first_lookup = next(i for i, c in enumerate(cmds) if "markex lookup" in c)
    assert any("node wait --for" in c for c in cmds[:first_lookup])


def test_the_readme_block_runs_word_for_word(tmp_path: Path) -> None:
    cmds = units(using_it_block())
    assert cmds[0].startswith(INIT)
    cmds[0] = cmds[0].replace(INIT, f"{INIT} --base-port {free_base_port()}", 1)
    lines = ["cd " + str(tmp_path)]
    for i, cmd in enumerate(cmds):
        lines += [cmd, "__rc=$?",
                  f'if [ $__rc -ne 0 ]; then echo "README-FAILED {i} rc=$__rc" >&2; '
                  'kill $(jobs -p) 2>/dev/null; exit 1; fi',
                  f'echo "README-OK {i}" >&2']
    script = tmp_path / "using-it.sh"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # `markex` on the PATH, running this worktree's code
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "markex"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m node.cli "$@"\n', encoding="utf-8")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKEX_")}
    env.update(PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=800)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # whatever the script left running
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
        proc.wait(timeout=30)
    done = set(re.findall(r"^README-OK (\d+)$", err, re.M))
    failed = re.findall(r"^README-FAILED (\d+)", err, re.M)
    assert not failed and proc.returncode == 0, (
        f"command {failed and cmds[int(failed[0])]!r} failed:\n{err[-4000:]}\n{out[-2000:]}")
    assert done == {str(i) for i in range(len(cmds))}
    assert "Traceback" not in err
    # what the story claims: the lookup shows the upheld appeal, its reasons and the tenure
    answers = [json.loads(line) for line in out.splitlines()
               if line.startswith("{") and f'"number": "{NUMBER}"' in line]
    final = answers[-1]
    assert final["verified"] is True and final["appeal"] == "upheld"
    [appeal] = final["appeals"]
    assert appeal["appellant"] == "carrier-2" and appeal["reason"] == "licensed courier"
    assert appeal["decision_reason"] == "courier confirmed"
    assert final["tenure_since_iso"] and final["view_signed_at"].endswith("Z")
    assert re.search(r"^verified +yes, against carrier-1's log checkpoint", out, re.M)
    assert "audit of carrier-1 (online): OK" in out
