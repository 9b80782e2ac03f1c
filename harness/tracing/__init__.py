"""Tracing: the Jaeger query API client (``jaeger.py``) and trace probes (``probes.py``)."""
