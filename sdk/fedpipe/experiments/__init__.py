"""Experiments: `fedpipe experiment <name>` runs one, writes a table (CSV and Markdown) and
a plot to an output directory, and logs them to MLflow."""
