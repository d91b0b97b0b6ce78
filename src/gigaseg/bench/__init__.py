"""Benchmarks that ``gigaseg bench`` runs: each is a function that returns a dict (printed as JSON)."""
