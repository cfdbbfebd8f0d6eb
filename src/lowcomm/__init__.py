"""lowcomm: communication-efficient distributed optimization with exact accounting.

Algorithms are explicit state plus step functions; engines (in-process ``simulate`` and
multi-process ``torchdist``) own the loop, the transport, the ledger and the clock.
"""

__version__ = "0.1.0"
