"""QueryForge benchmarks: figures and ratios against raw baselines measured in the same run.

Run with `make bench` (or `.venv/bin/python -m bench --quick` from the repo root). Benchmarks
never assert; they print what they measured and how it compares with the stated goals.
"""
