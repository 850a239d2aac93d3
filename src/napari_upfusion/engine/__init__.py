"""Floor 2: the public array API (arrays or files in, fused array out); no napari, no Qt, no dask.distributed.

Imports the model (floor 1) and the ground floor only; the modules beside it (fusers,
evaluation, data, training, batch) and the front ends (plugin, cli) import it, never
the other way round.  See ``docs/architecture.md``.
"""
