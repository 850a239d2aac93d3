"""Beside the engine: fusing a cohort listed in a CSV manifest (:mod:`.cohort`), resumably, in this process or on
a Dask cluster (:mod:`.cluster`)."""
