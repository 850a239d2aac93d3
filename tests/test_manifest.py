"""The npe2 manifest: valid for npe2, every python_name importable, and the contributions napari shows."""

from __future__ import annotations

from pathlib import Path

import pytest

import napari_upfusion

MANIFEST = Path(napari_upfusion.__file__).with_name("napari.yaml")


def test_npe2_validate_passes_with_imports() -> None:
    """What `npe2 validate --imports src/napari_upfusion/napari.yaml` runs, through npe2's own command."""
    from npe2.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["validate", str(MANIFEST), "--imports"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "Invalid" not in result.output


def test_manifest_declares_widget_reader_writer_and_samples() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-upfusion"
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["UP-Fusion"]
    (reader,) = contributions.readers
    assert reader.accepts_directories
    assert {"*.nii", "*.nii.gz", "*.mha", "*.mhd", "*.nrrd", "*.dcm"} <= set(reader.filename_patterns)
    writer, dicom = contributions.writers
    for contribution in (writer, dicom):
        assert [t.value if hasattr(t, "value") else t for t in contribution.layer_types] == ["image"]
    assert {".nii", ".nii.gz"} <= set(writer.filename_extensions)
    assert dicom.filename_extensions == [] and "DICOM" in dicom.display_name  # a folder: npe2's writers of folders
    assert {s.key for s in contributions.sample_data} == {"brain_mri_pet", "infrared_visible"}
    commands = {c.id: c.python_name for c in contributions.commands}
    assert commands[dicom.command] == "napari_upfusion.plugin.writer:write_dicom_layer"
    for contribution in [*contributions.widgets, reader, writer, dicom, *contributions.sample_data]:
        assert contribution.command in commands


def test_the_installed_entry_point_finds_this_manifest() -> None:
    """napari discovers the plugin through the `napari.manifest` entry point of the distribution."""
    from importlib.metadata import entry_points

    points = [ep for ep in entry_points(group="napari.manifest") if ep.name == "napari-upfusion"]
    if not points:
        pytest.skip("napari-upfusion is not installed as a distribution here")
    assert points[0].value == "napari_upfusion:napari.yaml"
