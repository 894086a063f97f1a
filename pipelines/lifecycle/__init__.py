"""The lifecycle around the stages: stateful retraining, backtests over time, loopline init and its profiles, run profiling, the run report and the summary."""
