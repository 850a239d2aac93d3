"""napari-upfusion: fuse co-registered images of two modalities with the UP-Fusion network."""

__version__ = "0.1.0"
