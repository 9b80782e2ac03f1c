"""Traffic generation and the statistics that turn observed traffic into verdicts."""
