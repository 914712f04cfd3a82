"""Plots (PNG, matplotlib Agg) and self-contained HTML reports for runs and sweeps."""
