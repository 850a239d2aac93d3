"""The package's import graph, read from the code by grimp (the library import-linter is built on).

``lint-imports`` (run by tox before pytest) checks the floors of ``docs/architecture.md``; these
tests check what its contracts do not say: that no module of the package imports another in a
circle, deferred (function-level) imports included, and that the fusers are registered as data.
"""

from __future__ import annotations

import subprocess
import sys

import grimp
import pytest

PACKAGE = "napari_upfusion"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, include_external_packages=True, cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected group of two or more package modules (Tarjan), and modules that import themselves."""
    modules = sorted(m for m in graph.modules if m == PACKAGE or m.startswith(PACKAGE + "."))
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in set(modules)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in edges[module]:
                groups.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return groups


def test_the_graph_sees_deferred_imports(graph):
    """The check below is not vacuous: imports inside functions are edges of the graph too."""
    # plugin.layers imports the engine's api only inside a function, so that the reader stays light
    assert "napari_upfusion.engine.api" in graph.find_modules_directly_imported_by("napari_upfusion.plugin.layers")
    details = graph.get_import_details(importer="napari_upfusion.plugin.layers", imported="napari_upfusion.engine.api")
    assert details and details[0]["line_contents"].startswith("from ..engine.api import")


def test_no_module_imports_another_in_a_circle(graph):
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    """A deliberate circle (the one the engine had: api -> lazy -> api) is reported."""
    graph = grimp.build_graph(PACKAGE, cache_dir=None)  # a graph of its own, changed below
    graph.add_import(importer="napari_upfusion.engine.lazy", imported="napari_upfusion.engine.api")
    assert ["napari_upfusion.engine.api", "napari_upfusion.engine.lazy"] in _cycles(graph)


def test_the_model_and_the_engine_use_no_dask_cluster(graph):
    """``dask.distributed`` is squashed into ``dask`` in the graph, so the import lines themselves are read."""
    inner = [m for m in graph.modules if m.startswith((f"{PACKAGE}.model", f"{PACKAGE}.engine"))]
    lines = [
        detail["line_contents"]
        for module in inner
        for external in ("dask", "distributed")
        if external in graph.modules
        for detail in graph.get_import_details(importer=module, imported=external)
    ]
    assert lines, "the engine imports dask.array, so some lines were read"
    assert not [line for line in lines if "distributed" in line]


def test_fusers_are_registered_as_data_and_built_on_demand():
    """Importing the package registers every built-in fuser without importing one, nor torch."""
    probe = (
        "import sys, napari_upfusion as nu\n"
        "from napari_upfusion.engine.registry import BUILTIN_FUSERS\n"
        "assert list(nu.available_fusers()) == [info.name for info in BUILTIN_FUSERS], nu.available_fusers()\n"
        "assert all(isinstance(info.factory, str) for info in BUILTIN_FUSERS)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('torch', 'napari_upfusion.fusers', "
        "'napari_upfusion.model')))\n"
        "assert not loaded, loaded\n"
        "import torch\n"
        "from napari_upfusion.engine.registry import build_fuser\n"
        "fuser = build_fuser('laplacian', torch.device('cpu'))\n"
        "assert type(fuser).__module__ == 'napari_upfusion.fusers.classical' and not fuser.training\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
