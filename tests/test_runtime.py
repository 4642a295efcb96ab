"""What every script shares at start: the one reading of --device (auto, cpu, CUDA indices) and a plain
start that prints nothing (torch_geometric's import-time torch.jit.script warning filtered, others not)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from encoder.core import config, util
from encoder.core.distributed import resolve_device

CPU = torch.device("cpu")


def test_device_auto_without_cuda_is_the_cpu_with_a_note(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    assert capsys.readouterr().out == "note: --device auto: CUDA is not available, running on the CPU\n"
    assert resolve_device("cpu") == CPU and resolve_device(CPU) == CPU
    for asked in ("1", 1, "cuda:1", "cuda"):
        with pytest.warns(UserWarning, match="requested but CUDA is not available"):
            assert resolve_device(asked) == CPU


def test_device_auto_with_cuda_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == resolve_device("1") == resolve_device(1) == torch.device("cuda", 1)
    for bad in ("gpu", "cuda:x", "-1"):
        with pytest.raises(util.DataError, match="device must be 'auto', 'cpu'"):
            resolve_device(bad)


@pytest.mark.parametrize("script", ["train_val.py", "generate_graph.py", "predict.py", "run_pipeline.py"])
def test_starting_a_script_prints_no_torch_jit_warning(script: str) -> None:
    """A script run as __main__ (here up to its --help) installs the filter at its first import, before
    torch_geometric loads; the filter is exact: another FutureWarning still shows."""
    code = (f"import runpy, sys, warnings\nsys.argv = [{script!r}, '--help']\ntry:\n"
            f"    runpy.run_path({script!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "warnings.warn('another FutureWarning', FutureWarning)")
    result = subprocess.run([sys.executable, "-c", code], cwd=config.REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "<string>:7: FutureWarning: another FutureWarning\n"  # and nothing else


def test_on_cuda_the_encoder_loaders_get_workers_and_elsewhere_keep_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's encoder settings load clips in the main process (sized for 2 cores); on a GPU machine
    run_pipeline gives training and extraction config.CUDA_MIN_WORKERS workers, at most the cores less two."""
    from temporal_gnn import pipeline_run

    monkeypatch.setattr(pipeline_run.os, "cpu_count", lambda: 16)
    settings, forward = pipeline_run.with_device_workers(config.DEMO, torch.device("cuda", 0))
    assert settings["STE_optimization_params"]["num_workers"] == config.CUDA_MIN_WORKERS
    assert forward == {"num_workers": config.CUDA_MIN_WORKERS}
    assert settings["STE_optimization_params"]["epochs"] == config.DEMO["STE_optimization_params"]["epochs"]
    monkeypatch.setattr(pipeline_run.os, "cpu_count", lambda: 4)
    assert pipeline_run.with_device_workers(config.DEMO, torch.device("cuda", 0))[1] == {"num_workers": 2}
    assert pipeline_run.with_device_workers(config.DEMO, CPU) == (config.DEMO, {})


def test_a_gnn_setting_edited_in_config_changes_the_gnn_stage_key(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """Users change hyperparameters in config.py, which a run reads when it starts (its settings objects); the
    flags only override it. A stage key without config.GNN would keep serving the GNN trained before the edit."""
    from temporal_gnn import graph_building, pipeline_run, stages

    args = pipeline_run.parse_args(["--device", "cpu"])
    dirs = stages.ChainDirs(tmp_path / "ste", tmp_path / "features", tmp_path / "graphs", tmp_path / "results",
                                  "exp")
    graph = graph_building.GraphSettings.from_config(config.DEMO["GRAPH"])
    upstream = stages.Upstream(graph, graph_building.GraphFolders(dirs.features, dirs.graphs), "graphs-stamp",
                               {"fold": None}, None)

    def key() -> dict:  # a run started after the edits so far
        return stages.gnn_stage(args, pipeline_run.profile_settings(config.DEMO), dirs, upstream, "audio", 0).key

    before = key()
    assert key() == before
    monkeypatch.setitem(config.GNN, "dropout", 0.5)
    assert key() != before
    # the classical system's and the prosody block's settings too, but not where their statistics are cached
    for section, name, value in (("CLASSICAL", "C_grid", (1.0,)), ("HANDCRAFTED", "f0_min_hz", 80.0),
                                 ("CLASSICAL", "cache_dir", tmp_path)):
        edited = key()
        monkeypatch.setitem(getattr(config, section), name, value)
        assert (key() != edited) is (name != "cache_dir")
