"""notebooks/quickstart.ipynb runs headless (nbclient, this venv's ipykernel) and displays the app."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


@pytest.mark.skipif(not (REPO / "assets" / "demo").is_dir(), reason="the bundled demo field is not there")
def test_quickstart_notebook_fits_the_demo_and_displays_the_app():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "converged" in text and "216 ccdImages" in text
    last = nb.cells[-1].outputs
    # the app is a Panel object rendered for Jupyter (a bokeh/panel mime bundle), not a text repr
    assert any("application/vnd.holoviews_exec.v0+json" in o.get("data", {}) for o in last), \
        [sorted(o.get("data", {})) for o in last]
