"""meshproof: prove that a service mesh does what its configuration says."""

from harness.versions import MESHPROOF

__version__ = MESHPROOF


def discover(discover_system: bool = True) -> dict[str, object]:
    """Chaos Toolkit's entry point for ``chaos discover meshproof``: see :mod:`harness.chaos`."""
    from harness.chaos import discover as chaos_discover

    return chaos_discover(discover_system)
