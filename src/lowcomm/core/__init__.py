"""Core types shared by every layer: messages, ledger, clock, RNG streams, errors."""
