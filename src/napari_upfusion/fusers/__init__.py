"""Beside the engine: slice fusers other than UP-Fusion (the classical references in :mod:`.classical`)."""
