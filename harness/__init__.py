"""meshproof: prove that a service mesh does what its configuration says."""

__version__ = "0.1.0"
