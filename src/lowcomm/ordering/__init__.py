"""Example orders: random reshuffling, shuffle-once, GraB balancers, the CD-GraB order server."""
