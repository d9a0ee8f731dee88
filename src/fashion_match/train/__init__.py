"""Metric-learning trainer (torch). Not imported by the runtime."""
