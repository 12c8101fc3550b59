"""Benchmark harness for runner: one command (`python -m benchmarks.run`) starts the provider
simulator with a realistic profile, runs each contender against the same workload, and writes a
markdown table and the raw figures as JSON.

Nothing here is imported by `runner` itself; the harness drives runner only through its CLI.
"""
