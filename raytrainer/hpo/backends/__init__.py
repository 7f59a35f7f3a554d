"""The two search backends: an Optuna study in the driver, or a Ray Tune experiment."""
