"""Machine-wide block/port claims: two meshes starting at once never share a block or a port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.backends.local.layout import Layout, Reservations


def test_two_owners_get_distinct_blocks_and_ports(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "state")
    a = Reservations(owner=1, root=tmp_path / "res")  # pid 1 is always alive
    me = Reservations(owner=os.getpid(), root=tmp_path / "res")
    blocks = {a.block(lay), me.block(lay)}
    ports = [a.port() for _ in range(5)] + [me.port() for _ in range(5)]
    assert len(blocks) == 2
    assert len(set(ports)) == 10


def test_claims_of_dead_processes_are_ignored_and_removed(tmp_path: Path) -> None:
    root = tmp_path / "res"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    root.mkdir()
    (root / f"{dead_pid}.json").write_text(json.dumps({"block": 10, "ports": [20000]}))
    lay = Layout(tmp_path / "state")
    me = Reservations(owner=os.getpid(), root=root)
    b = me.block(lay)
    assert not (root / f"{dead_pid}.json").exists()
    assert b == lay.pick_block()  # the dead claim no longer excludes anything


def test_release_frees_the_claim(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "state")
    a = Reservations(owner=1, root=tmp_path / "res")
    b = a.block(lay)
    me = Reservations(owner=os.getpid(), root=tmp_path / "res")
    a.release()
    assert not (tmp_path / "res" / "1.json").exists()
    assert me.block(lay) == b  # the released block is free again
