"""Algorithms: explicit state plus worker and aggregator step functions, engine-agnostic."""
