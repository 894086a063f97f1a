"""Features: point-in-time aggregates, the feature spec fitted on the train split, the numba kernels, the spec frame and the leakage checks that fail a build."""
