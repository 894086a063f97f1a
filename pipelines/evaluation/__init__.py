"""Offline evaluation: metrics on the test split, slices, calibration, behavioural tests and the gate a challenger must pass."""
