"""Experiments: sweeps of simulated runs that answer one question each (`fedpipe experiment`)."""
