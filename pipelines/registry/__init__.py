"""The model registry: immutable versions, champion and challenger aliases moved by exclusive create, and garbage collection."""
