"""The Colab quickstart notebook runs top to bottom (reduced step count)."""

import os

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JAXVISION_NOTEBOOK_STEPS", "3")
    monkeypatch.setenv("JAXVISION_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAXVISION_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    nb = nbformat.read(os.path.join(ROOT, "colab", "quickstart.ipynb"), as_version=4)
    # run in a copy of the repo root layout: the notebook writes under ROOT/runs
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.join(ROOT, "colab")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # predictions grid and training curves
    text = "".join(o.get("text", "") for o in outputs)
    assert "miou" in text
