"""The version-skew rule and the release data (pure)."""

from __future__ import annotations

import pytest

from harness.errors import SkewError, UserError
from harness.upgrade import skew
from harness.versions import ISTIO_RELEASES


def test_both_releases_are_pinned_with_their_envoy_line() -> None:
    assert {"1.30-dev", "1.31-dev"} <= set(ISTIO_RELEASES)
    assert ISTIO_RELEASES["1.30-dev"].envoy_version.startswith("1.38.")
    assert ISTIO_RELEASES["1.31-dev"].envoy_version.startswith("1.39.")
    assert ISTIO_RELEASES["1.30-dev"].minor == (1, 30)


def test_forward_one_minor_and_same_release_are_allowed() -> None:
    skew.check_upgrade("1.30-dev", "1.31-dev")
    skew.check_upgrade("1.31-dev", "1.31-dev")


def test_downgrade_exits_2_with_the_rule() -> None:
    with pytest.raises(SkewError) as e:
        skew.check_upgrade("1.31-dev", "1.30-dev")
    assert e.value.exit_code == 2
    assert "newer than" in str(e.value) and "one minor release ahead" in str(e.value)


def test_unknown_version_names_the_known_ones() -> None:
    with pytest.raises(UserError) as e:
        skew.check_upgrade("1.29", "1.31-dev")
    assert "1.30-dev" in str(e.value) and "1.31-dev" in str(e.value)


def test_step_rule_control_plane_ahead_by_at_most_one_minor(monkeypatch: pytest.MonkeyPatch) -> None:
    skew.check_step("1.31-dev", "1.30-dev", "in place")  # new istiod, old proxies: supported
    with pytest.raises(SkewError, match="behind proxy"):
        skew.check_step("1.30-dev", "1.31-dev", "old istiod, new proxy")
    from harness.versions import IstioRelease

    monkeypatch.setitem(ISTIO_RELEASES, "1.32-dev", IstioRelease("1.32-dev", "v0", "1.40.0"))
    with pytest.raises(SkewError, match="more than one minor"):
        skew.check_step("1.32-dev", "1.30-dev", "two minors")
    with pytest.raises(SkewError, match="skips a minor"):
        skew.check_upgrade("1.30-dev", "1.32-dev")


def test_revision_names() -> None:
    assert skew.revision_of("1.31-dev") == "1-31-dev"
