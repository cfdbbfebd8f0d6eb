"""Compressors that compose: top-k, random-k, and error feedback as a wrapper."""
