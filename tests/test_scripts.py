"""The GNN side is the temporal_gnn package; the original's commands stay thin scripts at the top level
(issue 36): each keeps its flags, the library imports no script, data_loader.py and models_gnn.py re-export
the package's names, and nothing installs a generic top-level module name."""

from __future__ import annotations

import ast
import contextlib
import io
import runpy
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from script_module import load_script

from encoder.core import config
from temporal_gnn import gnn_model, graph_data

REPO = config.REPO_ROOT
PACKAGE = REPO / "temporal_gnn"
# each command with flags of the original (generate_graph.py, train_val.py) or of this project's scripts
FLAGS = {
    "generate_graph.py": ["--feature", "--numv", "--time_edge", "--cross_identity", "--edge_weight", "--workers",
                          "--force"],
    "train_val.py": ["--feature", "--numv", "--time_edge", "--cross_identity", "--num_epoch", "--exp", "--modalities",
                     "--causal", "--no_temporal", "--no_classical", "--seed", "--device"],
    "run_pipeline.py": ["--data", "--preset", "--device", "--force", "--modalities", "--cv", "--seeds", "--jobs",
                        "--name", "--work"],
    "predict.py": ["--model", "--encoder", "--gnn", "--session", "--sessions", "--out", "--online"],
    "cv_results.py": ["--compare", "--modalities", "--suffix_b", "--modalities_b"],
}
# what pyproject.toml once installed as top-level modules, and the top-level files now
TOP_LEVEL = ("data_loader", "generate_graph", "models_gnn", "train_val", "run_pipeline", "predict", "online",
             "model_folder", "cv_results", "stages", "models_temporal", "systems", "classical")


@pytest.mark.parametrize("script", sorted(FLAGS))
def test_each_command_runs_as_a_script_with_its_flags(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exited, contextlib.redirect_stdout(io.StringIO()) as out:
        runpy.run_path(str(REPO / script), run_name="__main__")
    assert exited.value.code == 0
    assert out.getvalue().startswith(f"usage: {script} ")
    assert [flag for flag in FLAGS[script] if f"{flag} " not in out.getvalue()] == []


def test_a_script_runs_from_the_repository_root_and_refuses_a_bad_flag_in_one_line() -> None:
    result = subprocess.run([sys.executable, "train_val.py", "--dropout", "2"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == ("train_val.py: error: GNN setting 'dropout' must be a number in [0, 1), "
                                              "not 2.0")


@pytest.mark.parametrize(("script", "module"), [("data_loader.py", graph_data), ("models_gnn.py", gnn_model)])
def test_the_originals_library_modules_re_export_every_public_name(script: str, module: ModuleType) -> None:
    reexport = load_script(REPO / script)
    public = {name for name, value in vars(module).items() if not name.startswith("_")
              and not isinstance(value, ModuleType)
              and getattr(value, "__module__", module.__name__) == module.__name__}  # its own, not imported ones
    assert set(reexport.__all__) == public
    assert all(getattr(reexport, name) is getattr(module, name) for name in public)


def test_the_library_imports_no_top_level_script() -> None:
    imported = {}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            imported[path.name] = imported.get(path.name, set()) | {n.split(".")[0] for n in names}
    assert {name: sorted(found & set(TOP_LEVEL)) for name, found in imported.items() if found & set(TOP_LEVEL)} == {}


def test_nothing_installs_a_generic_top_level_module(tmp_path: Path) -> None:
    """Outside the repository root only the two packages import: no script or former module by its bare name."""
    code = ("import importlib.util, sys; names = sys.argv[1:]; "
            "print(' '.join(n for n in names if importlib.util.find_spec(n) is not None))")
    result = subprocess.run([sys.executable, "-c", code, *TOP_LEVEL, "encoder", "temporal_gnn"], cwd=tmp_path,
                            capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.split() == ["encoder", "temporal_gnn"]
