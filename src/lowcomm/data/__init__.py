"""Data sets, loaders and partitioners into worker shards."""
