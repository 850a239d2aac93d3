"""Front end: the napari plugin (widget, layers to and from the engine, reader, writer, sample data).

npe2 imports each contribution by its ``python_name`` in ``napari.yaml``; this package
file imports nothing, so that a light module such as :mod:`.gl_guard` or the reader
does not bring in napari, Qt or torch.
"""
