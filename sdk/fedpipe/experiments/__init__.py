"""Experiments: `fedpipe experiment <name>` sweeps that write a table and a plot."""
