"""Metrics computed from predictions: T. stddev (more to come: fidelity, MI, ECE, attention IoU)."""

from kdlab.metrics.tstddev import t_stddev

__all__ = ["t_stddev"]
