"""Benchmarks of flux2cli against raw diffusers: `make bench` or `python -m benchmarks.run`."""
