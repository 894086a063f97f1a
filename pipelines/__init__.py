"""Loopline: raw event data to a monitored, self-retraining model. One subpackage or module per lifecycle
step on a small core; ``loopline --help`` lists the steps in pipeline order."""
