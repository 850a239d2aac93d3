"""Beside the engine: image data the package makes itself (sample pairs, simulated training pairs).

This package file imports nothing, so that the light vocabulary of :mod:`.vocabulary`
(read by the command line's ``--help``) does not load scipy or the sources.
"""
