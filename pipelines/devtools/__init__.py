"""Tools for working on Loopline itself: the import graph (layers, cycles, each DVC stage's code closure)."""
