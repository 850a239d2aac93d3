"""Beside the engine: training the project's own UP-Fusion weights (nothing in the model or engine imports this)."""
