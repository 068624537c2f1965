"""Benchmarks that print figures (``make bench-*``); measured side by side in one run."""
