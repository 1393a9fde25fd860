"""Hydra multirun sweeps as MLflow parent/child runs, Optuna search, and the comparison report of a sweep."""
