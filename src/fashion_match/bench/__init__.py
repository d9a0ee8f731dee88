"""Benchmarks: machine records now; the accuracy-versus-latency report comes with fm-bench."""
