"""Ground floor: small helpers every layer may use (files, colour constants); no torch, no napari, no Qt."""
