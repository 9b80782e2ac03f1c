"""locked_install: the warm case takes no lock, a cold one builds once under the lock, a second
process waits for the first and finds its stamp."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

from harness.cache import locked_install
from harness.errors import StateError


class Store:
    """A stamp in a dict: current() answers what build() wrote."""

    def __init__(self, value: str | None = None) -> None:
        self.value = value
        self.builds = 0

    def current(self) -> str | None:
        return self.value

    def build(self) -> str:
        self.builds += 1
        self.value = f"built-{self.builds}"
        return self.value


def test_warm_returns_the_installed_thing_without_a_lock(tmp_path: Path) -> None:
    store, said = Store("old"), []
    root = tmp_path / "missing"
    got = locked_install(root, what="X 1", current=store.current, build=store.build, say=said.append)
    assert got == "old" and store.builds == 0
    assert not root.exists()  # no lock file made
    assert said == [f"X 1 already installed in {root}"]


def test_cold_builds_once_under_the_lock(tmp_path: Path) -> None:
    store = Store()
    assert locked_install(tmp_path / "r", what="X", current=store.current, build=store.build) == "built-1"
    assert (tmp_path / "r" / ".install.lock").is_file()
    assert locked_install(tmp_path / "r", what="X", current=store.current, build=store.build) == "built-1"
    assert store.builds == 1


def test_a_stale_or_missing_stamp_raising_state_error_counts_as_not_installed(tmp_path: Path) -> None:
    store = Store()

    def load() -> str:
        if store.value is None:
            raise StateError("not installed")
        return store.value

    assert locked_install(tmp_path, what="X", current=load, build=store.build) == "built-1"
    assert locked_install(tmp_path, what="X", current=load, build=store.build) == "built-1"
    assert store.builds == 1


def test_force_rebuilds(tmp_path: Path) -> None:
    store = Store("old")
    got = locked_install(tmp_path, what="X", current=store.current, build=store.build, force=True)
    assert got == "built-1" and store.builds == 1


def test_a_second_installer_waits_and_finds_the_first_ones_stamp(tmp_path: Path) -> None:
    store, said = Store(), []
    waiting = threading.Event()

    def say(msg: str) -> None:
        said.append(msg)
        if "waiting" in msg:
            waiting.set()

    result: list[str] = []
    with open(tmp_path / "my.lock", "a+") as held:  # "another process" holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(
            target=lambda: result.append(
                locked_install(
                    tmp_path, what="X", current=store.current, build=store.build, say=say, lock_name="my.lock"
                )
            )
        )
        t.start()
        assert waiting.wait(10)
        store.value = "built-by-the-other"  # the other process wrote its stamp, then unlocks
    t.join(10)
    assert result == ["built-by-the-other"] and store.builds == 0
    assert said == [
        "another meshproof install of X is running: waiting for it",
        f"X was installed meanwhile in {tmp_path}",
    ]
