"""Training the project's own UP-Fusion weights (beside the engine; layers 1-2 never import this)."""
