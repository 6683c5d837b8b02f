"""Benchmarks: `python -m bench` writes bench/report.json (see bench/report.py)."""
