"""Training: train() and the loop it drives, the optimizer, checkpoints, the backend, signals and progress."""
