"""Running configured experiments: configs, the runner, results on disk, comparisons, plots."""
