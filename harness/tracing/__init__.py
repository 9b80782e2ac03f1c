"""Tracing: the Jaeger query API client (``jaeger.py``)."""
