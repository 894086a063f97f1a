"""Monitoring: the monitor stage that compares a window with its reference (drift, performance where labels have matured) and writes the retrain decision."""
