"""Objectives with a leading worker axis: every method takes parameters ``[w, d]``."""
