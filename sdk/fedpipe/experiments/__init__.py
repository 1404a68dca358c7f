"""Experiment commands (`fedpipe experiment <name>`): each writes a table and a plot."""
