"""Benchmarks run by `skillfoundry bench ...`; results are recorded in docs/benchmarks.md."""
