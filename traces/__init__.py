"""Workloads in (trace loaders, synthetic generators) and records out (schemas, writers)."""
