"""Experiments you can trust: seeds, statistics, sweeps (on Optuna) and the named experiments."""
