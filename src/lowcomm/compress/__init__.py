"""Compressors that compose: top-k, random-k, scaled sign, QSGD, low rank, and error feedback."""
