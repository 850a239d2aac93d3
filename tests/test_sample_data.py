"""File > Open Sample > UP-Fusion: aligned pairs from packaged data, placed in physical space, modalities recorded."""

from __future__ import annotations

import numpy as np

from napari_upfusion.data import samples

PLUGIN = "napari-upfusion"


def test_brain_mri_pet_sample_opens_aligned_in_mni_space(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "brain_mri_pet")
    mri, pet = viewer.layers["MRI"], viewer.layers["PET"]
    assert [layer.name for layer in layers] == ["MRI", "PET"]
    pair = samples.brain_mri_pet()
    np.testing.assert_array_equal(mri.data, pair.a)
    np.testing.assert_array_equal(pet.data, pair.b)
    for layer in (mri, pet):
        np.testing.assert_allclose(layer.scale, pair.spacing)
        np.testing.assert_allclose(layer.translate, pair.origin)
        assert [str(u) for u in layer.units] == ["millimeter"] * 3
        assert "simulated" in layer.metadata["description"]
    assert (mri.metadata["modality"], pet.metadata["modality"]) == ("MRI", "PET")
    assert (mri.metadata["sample"], pet.metadata["sample"]) == ("real", "simulated")
    # the MNI origin (0, 0, 0) falls inside the brain volume, as in the template
    index = np.round(mri.world_to_data((0.0, 0.0, 0.0))).astype(int)
    assert all(0 <= i < n for i, n in zip(index, mri.data.shape, strict=True))


def test_infrared_visible_sample_opens_as_colour_and_grey(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "infrared_visible")
    visible, infrared = viewer.layers["visible"], viewer.layers["infrared"]
    assert visible.rgb and visible.data.shape == (512, 512, 3)
    assert not infrared.rgb and infrared.data.shape == (512, 512)
    assert (visible.metadata["modality"], infrared.metadata["modality"]) == ("VIS", "IR")
    np.testing.assert_array_equal(infrared.data, samples.infrared_visible().b)
    np.testing.assert_allclose(visible.scale, (1.0, 1.0))
