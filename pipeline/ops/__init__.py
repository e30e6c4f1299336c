"""Changing the store outside a run: invalidate, check and purge (`maintenance`), parsing kept
responses again (`reparse`), importing human ratings, and synthetic data roots for tests and
benchmarks."""
