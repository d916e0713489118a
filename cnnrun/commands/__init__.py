"""The commands beside `train`: sweeps and their launchers, reproduce, predict, export, the demo data."""
