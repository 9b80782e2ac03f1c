"""Locust's CPU: the process group's utime + stime, its members read directly between /proc scans."""

from __future__ import annotations

import os

from harness.load.local import _group_cpu_seconds
from harness.proc import group_members


def test_the_known_members_count_as_a_scan_does() -> None:
    pgid = os.getpgrp()
    members = group_members(pgid)
    assert os.getpid() in members
    sum(range(200_000))  # some CPU of our own
    assert _group_cpu_seconds(pgid, [os.getpid()]) > 0


def test_a_pid_outside_the_group_is_not_counted() -> None:
    """Negative control: the same pid under another group id counts nothing (a reused pid)."""
    sum(range(200_000))
    assert _group_cpu_seconds(os.getpgrp() + 1_000_000, [os.getpid()]) == 0
