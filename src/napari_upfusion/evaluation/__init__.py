"""Beside the engine: scoring fusers (:mod:`.metrics`, :mod:`.evaluate`), the demo's pictures and tables
(:mod:`.report`) and the speed and memory table (:mod:`.bench`)."""
