"""Reports and plots (matplotlib, Agg backend: no display needed)."""
