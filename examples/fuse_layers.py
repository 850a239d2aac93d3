"""Drive napari from Python: open the sample brain pair, fuse it, and show the result beside the widget.

    python examples/fuse_layers.py                         # a window; close it to finish
    python examples/fuse_layers.py --screenshot fused.png  # no interaction: write a screenshot and exit
    python examples/fuse_layers.py --model average         # a classical fuser instead of UP-Fusion

The sample pair (File > Open Sample > UP-Fusion in the viewer) is the MNI152 T1 template shipped with
nilearn and a PET-like volume simulated from its tissue maps; nothing is downloaded.  The bundled 'small'
network fuses its 88 axial slices in some seconds on a CPU.
"""

from __future__ import annotations

import argparse
import sys

import napari


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small", help="small (bundled), paper, average, maximum, laplacian")
    parser.add_argument("--colormap", default="hot", help="colour the PET through hot, jet or pet ('none': grey)")
    parser.add_argument("--screenshot", help="write a screenshot of the window to this PNG and exit")
    args = parser.parse_args(argv)

    viewer = napari.Viewer(show=args.screenshot is None)
    viewer.open_sample("napari-upfusion", "brain_mri_pet")  # layers "MRI" and "PET", placed in MNI mm

    # imported here, after napari has drawn its canvas and loaded the plugin, as from the Plugins menu
    from napari_upfusion import fuse_layers  # the plugin's scripting entry point

    def progress(done: int, total: int) -> None:
        print(f"\rfused {done}/{total} slices", end="", flush=True)

    fused = fuse_layers(
        viewer,
        "MRI",
        "PET",  # modalities come from the layers' metadata; pass modalities=("MRI", "PET") for your own layers
        model=args.model,
        colormap=None if args.colormap == "none" else args.colormap,
        progress=progress,
    )
    print(
        f"\nadded {fused.name!r}: {fused.metadata['upfusion']['seconds']} s on {fused.metadata['upfusion']['device']}"
    )
    viewer.window.add_plugin_dock_widget("napari-upfusion", "UP-Fusion")  # the same fusion, interactively

    if args.screenshot:
        viewer.screenshot(args.screenshot, canvas_only=False, flash=False)
        print(f"wrote {args.screenshot}")
        viewer.close()
        return 0
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
