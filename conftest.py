"""Root conftest: intentionally empty. The meshproof pytest plugin (harness.plugin) is registered once,
through the ``pytest11`` entry point in pyproject.toml; install the package (``./scripts/setup`` or
``pip install -e .``) so pytest loads it. Listing it here as well would register it twice."""
