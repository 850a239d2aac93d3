"""UP-Fusion weights files: safe reading and saving (:mod:`.io`), foreign layouts mapped onto this package's
names (:mod:`.convert`), strict loading (:mod:`.load`) and where weights live (:mod:`.weights`).

The submodules are imported by name; this package file imports nothing, so that the
key filters of :mod:`.convert` can be used by the backbones without loading the rest.
"""
