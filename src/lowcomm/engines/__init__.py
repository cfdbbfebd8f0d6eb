"""Engines own the loop, hosting, transport, ledger, clock, evaluation and checkpoints."""
