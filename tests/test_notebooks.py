"""The notebooks run top to bottom, headless (the original's did not: an undefined name, an
unterminated f-string)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from encoder.core import frames

ENCODER = Path(__file__).resolve().parents[1] / "encoder"


def run_notebook(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(ENCODER)}})
    client.execute()
    return notebook


def test_df_generator_runs_on_tiny(tmp_path, tiny_raw, monkeypatch):
    root = tmp_path / "KEMDy20"
    shutil.copytree(tiny_raw, root)
    monkeypatch.setenv("KEMDY20_NOTEBOOK_ROOT", str(root))  # inherited by the kernel
    notebook = run_notebook(ENCODER / "df_generator.ipynb")
    assert all(output.get("output_type") != "error" for cell in notebook.cells for output in cell.get("outputs", []))
    for name in frames.artifacts():
        assert (root / name).is_file(), name
    # what the notebook wrote is what the stage builds
    loaded = frames.load_frames(root)
    built = frames.build_frames(root)
    assert list(loaded.gt["segment_id"]) == list(built.gt["segment_id"])
    assert sorted(loaded.entities) == sorted(built.entities)
    assert len(loaded.nodes) == len(built.nodes)
