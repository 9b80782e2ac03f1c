"""Installs into the shared cache directory, once: the stamp -> flock -> recheck -> build discipline.

Several processes (parallel checkouts, CI jobs, ``meshproof install`` beside a test run) may want
the same build at the same time. :func:`locked_install` makes the first one build it and every
other one wait on a lock file and then find the stamp the first one wrote::

    current()?  -> return it            (no lock taken: the common, warm case)
    flock(root/lock_name)               (says so when it has to wait)
    current()?  -> return it            (another process built it meanwhile)
    build()                             (under the lock; writes the stamp last)

``current`` returns the installed thing when its stamp matches the pins, else None (or raises
:class:`~harness.errors.StateError`, as the installs' ``load`` functions do); ``force`` skips both
checks and rebuilds.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness.errors import StateError

T = TypeVar("T")


def _found(current: Callable[[], T | None]) -> T | None:
    try:
        return current()
    except StateError:  # not installed, or a stale stamp
        return None


def locked_install(
    root: Path,
    *,
    what: str,
    current: Callable[[], T | None],
    build: Callable[[], T],
    say: Callable[[str], None] = lambda _msg: None,
    force: bool = False,
    lock_name: str = ".install.lock",
) -> T:
    """``current()`` if installed, else ``build()`` under ``root/lock_name`` (rechecked once locked)."""
    if not force:
        found = _found(current)
        if found is not None:
            say(f"{what} already installed in {root}")
            return found
    root.mkdir(parents=True, exist_ok=True)
    with open(root / lock_name, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another meshproof install of {what} is running: waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            found = _found(current)
            if found is not None:
                say(f"{what} was installed meanwhile in {root}")
                return found
        return build()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (the installs' stamps record their binaries' digests)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
