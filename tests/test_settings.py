"""The graph and GNN stages' settings are objects (graph_building.GraphSettings, gnn_training.GnnSettings) built
from config.GRAPH / config.GNN, overridden by a profile or the scripts' flags, checked when built, and passed
as they are by run_pipeline.py and stages.py: a config.py edit reaches the stage keys, the GNN and
settings.json (issue 36)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from script_module import load_script

from encoder.core import config, layout, util
from temporal_gnn import gnn_training, graph_building, pipeline_run, stages

GraphSettings, GnnSettings = graph_building.GraphSettings, gnn_training.GnnSettings
# the scripts, for their main() in this process (generate_graph.py runs graph_building.run)
train_val, run_pipeline = (load_script(config.REPO_ROOT / f"{name}.py") for name in ("train_val", "run_pipeline"))


# --------------------------------------------------------------------------- building and checking


def test_graph_settings_from_config_and_from_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GraphSettings.from_config().to_dict() == dict(config.GRAPH)
    assert GraphSettings.from_config({"numv": 250}) == replace(GraphSettings.from_config(), numv=250)
    assert GraphSettings.from_args(graph_building.parse_args([])) == GraphSettings.from_config()
    flags = graph_building.parse_args(["--numv", "7", "--time_edge", "2", "--cross_identity", "ciy"])
    assert GraphSettings.from_args(flags) == GraphSettings(7, 2.0, "ciy")
    # an edit of config.GRAPH is what both build, the flags' defaults included
    monkeypatch.setitem(config.GRAPH, "time_edge", 5)
    assert GraphSettings.from_config().time_edge == 5.0
    assert GraphSettings.from_args(graph_building.parse_args([])).time_edge == 5.0
    assert GraphSettings.from_config().folder_name("features") == "features_2000_5_cin"


def test_gnn_settings_from_config_and_from_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    default = GnnSettings.from_config()
    assert {k: v for k, v in default.to_dict().items() if k in config.GNN} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in config.GNN.items()}  # to_dict: JSON lists
    assert (default.modalities, default.causal, default.skip) == (None, False, ())
    assert GnnSettings.from_args(gnn_training.parse_args([])) == default
    flags = gnn_training.parse_args(["--num_epoch", "3", "--causal", "--modalities", "audio,eda", "--no_temporal",
                                  "--temporal_in_series", "--class_weight", "--seed", "4"])
    assert GnnSettings.from_args(flags) == replace(default, num_epoch=3, causal=True, modalities="audio,eda",
                                                   skip=("temporal",), temporal_beside=False, class_weight=True,
                                                   seed=4)
    assert GnnSettings.from_args(flags).blocks == ["audio", "eda"]
    monkeypatch.setitem(config.GNN, "lr", 0.5)
    assert GnnSettings.from_config().lr == GnnSettings.from_args(gnn_training.parse_args([])).lr == 0.5


@pytest.mark.parametrize(("build", "message"), [
    (lambda: GraphSettings.from_config({"numv": 0}), "GRAPH setting 'numv' must be an integer >= 1, not 0"),
    (lambda: GraphSettings.from_config({"time_edge": -1.0}), "GRAPH setting 'time_edge' must be"),
    (lambda: GraphSettings.from_config({"cross_identity": "cix"}), "GRAPH setting 'cross_identity' must be one of"),
    (lambda: GraphSettings.from_config({"edge_weight": "fsimy"}), "GRAPH has no setting 'edge_weight'"),
    (lambda: GnnSettings.from_config({"num_epoch": 0}), "GNN setting 'num_epoch' must be an integer >= 1, not 0"),
    (lambda: GnnSettings.from_config({"batch_size": 2.5}), "GNN setting 'batch_size' must be an integer >= 1"),
    (lambda: GnnSettings.from_config({"dropout": 1.5}), "GNN setting 'dropout' must be a number in [0, 1)"),
    (lambda: GnnSettings.from_config({"seed": -1}), "GNN setting 'seed' must be an integer in [0, 2**32)"),
    (lambda: GnnSettings.from_config({"class_weight": 1}), "GNN setting 'class_weight' must be True or False"),
    (lambda: GnnSettings.from_config({"modalities": "audio,foo"}), "GNN setting 'modalities' must be None or"),
    (lambda: GnnSettings.from_config({"modalities": "audio,audio"}), "GNN setting 'modalities' must be None or"),
    (lambda: GnnSettings.from_config({"modalities": ["audio"]}), "GNN setting 'modalities' must be None or"),
    (lambda: GnnSettings.from_config({"skip": ("gnn",)}), "GNN setting 'skip' must be a sequence of names among"),
    (lambda: GnnSettings.from_config({"skip": "temporal"}), "GNN setting 'skip' must be a sequence of names"),
    (lambda: GnnSettings.from_config({"epochs": 3}), "GNN has no setting 'epochs'"),
    (lambda: replace(GnnSettings.from_config(), patience=-1), "GNN setting 'patience' must be an integer >= 0"),
])
def test_a_bad_setting_is_refused_when_built_in_one_line_naming_it(build: Any, message: str) -> None:
    with pytest.raises(ValueError) as err:
        build()
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_config_section_that_lacks_a_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(config.GNN, "lr")
    with pytest.raises(ValueError, match=r"config.GNN lacks 'lr'"):
        GnnSettings.from_config()


@pytest.mark.parametrize(("script", "flags", "message"), [
    (graph_building.run, ["--numv", "0"], "GRAPH setting 'numv' must be an integer >= 1, not 0"),
    (train_val.main, ["--num_epoch", "0"], "GNN setting 'num_epoch' must be an integer >= 1, not 0"),
    (train_val.main, ["--dropout", "2"], "GNN setting 'dropout' must be a number in [0, 1), not 2.0"),
])
def test_the_scripts_refuse_a_bad_flag_value_before_reading_anything(script: Any, flags: list[str],
                                                                      message: str) -> None:
    with pytest.raises(SystemExit) as exit_, contextlib.redirect_stderr(io.StringIO()) as err:
        script(flags)
    assert exit_.value.code == 2 and message in err.getvalue()


def test_the_originals_edge_weight_flag_is_accepted_and_changes_nothing(tmp_path: Path) -> None:
    args = graph_building.parse_args(["--edge_weight", "fsimn"])
    assert GraphSettings.from_args(args) == GraphSettings.from_config()
    assert "edge_weight" not in config.GRAPH and "edge_weight" not in GraphSettings.from_config().to_dict()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        graph_building.settings_from_args(graph_building.argument_parser(), args)
    assert "--edge_weight fsimn changes nothing" in err.getvalue()


# --------------------------------------------------------------------------- how the pipeline passes them


class Planner(stages.Pipeline):
    """A stage cache that runs nothing: it records every stage's key and what it would have run."""

    def __init__(self, state_path: Path):
        super().__init__(state_path, force=False)
        self.keys: dict[str, dict] = {}
        self.runs: dict[str, Any] = {}

    def stage(self, name: str, key: dict[str, Any], outputs: list[Path], run: Any) -> str:
        self.keys[name], self.runs[name] = key, run
        return stages.digest(key)


def plan(tmp_path: Path, *flags: str, edit: Any = None) -> tuple[Planner, dict[str, Any]]:
    """The single run's stage keys and settings.json content on the demo profile (config as it is now; `edit`:
    applied to the settings as run_pipeline builds them), without running a stage."""
    args = pipeline_run.parse_args(["--device", "cpu", "--work", str(tmp_path), *flags])
    settings = pipeline_run.checked_settings(args, "demo")
    settings = edit(settings) if edit else settings
    planner = Planner(tmp_path / layout.STATE_FILE)
    chains = stages.plan_single(args, "demo_x")
    with stages.GnnWorkers(1) as workers:
        stages.execute(args, planner, tmp_path / "data", "frames", settings, chains, workers)
    return planner, pipeline_run.run_settings(args, settings, "", {"synthetic": "demo"}, "demo")


def gnn_job(planner: Planner, name: str = "train_val") -> stages.GnnJob:
    return planner.runs[name].args[0]  # partial(train_gnn, job)


def changed(before: Planner, after: Planner) -> set[str]:
    return {name for name in before.keys if stages.digest(before.keys[name]) != stages.digest(after.keys[name])}


def test_the_pipeline_passes_the_profiles_settings_objects_to_the_stages(tmp_path: Path) -> None:
    planner, recorded = plan(tmp_path)
    assert list(planner.keys) == ["STE_train", "STE_forward", "generate_graph", "train_val"]
    job = gnn_job(planner)
    assert job.graph == GraphSettings.from_config(config.DEMO["GRAPH"])
    assert job.gnn == replace(GnnSettings.from_config(config.DEMO["GNN"]), modalities=config.MODALITIES)
    assert job.folders.graph_dir(job.graph) == tmp_path / "graphs" / "features_250_7.2_cin"
    assert planner.keys["generate_graph"]["graph"] == job.graph.to_dict()
    assert planner.keys["train_val"]["gnn"] == job.gnn.to_dict()
    # settings.json records the same objects' dicts
    assert recorded["GRAPH"] == job.graph.to_dict() and recorded["GNN"] == job.gnn.to_dict()
    assert recorded["gnn_seeds"] == [config.SEED]


@pytest.mark.parametrize(("section", "name", "value", "reruns"), [
    ("GRAPH", "time_edge", 3.0, {"generate_graph", "train_val"}),
    ("GRAPH", "cross_identity", "ciy", {"generate_graph", "train_val"}),
    ("GNN", "lr", 0.01, {"train_val"}),
    ("GNN", "channel2", 8, {"train_val"}),
    ("GNN", "seed", config.SEED + 5, {"train_val"}),
])
def test_a_config_edit_reaches_the_stage_keys_and_settings_json(section: str, name: str, value: Any,
                                                                 reruns: set[str], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Users change hyperparameters in config.py: an entry the demo profile does not set reaches the run."""
    assert name not in config.DEMO[section]
    before, recorded_before = plan(tmp_path)
    monkeypatch.setitem(getattr(config, section), name, value)
    after, recorded = plan(tmp_path)
    assert changed(before, after) == reruns
    job = gnn_job(after)
    assert getattr(job.graph if section == "GRAPH" else job.gnn, name) == value
    assert recorded[section][name] == value != recorded_before[section][name]


def test_a_demo_profile_value_wins_over_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before, _ = plan(tmp_path)
    monkeypatch.setitem(config.GNN, "num_epoch", 5)  # the demo profile sets 40 (run_pipeline prints so)
    after, recorded = plan(tmp_path)
    assert changed(before, after) == set() and gnn_job(after).gnn.num_epoch == recorded["GNN"]["num_epoch"] == 40
    full = pipeline_run.checked_settings(pipeline_run.parse_args([]), "full")
    assert full["gnn"].num_epoch == 5


def test_gnn_seed_seeds_the_pipelines_gnn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GNN["seed"] is the GNN's seed at the pipeline's default --seed; each later pipeline seed shifts it."""
    planner, recorded = plan(tmp_path, "--seeds", "2", "--keep_encoder")
    seeds = [gnn_job(planner, name).gnn.seed for name in ("train_val", f"train_val seed {config.SEED + 1}")]
    assert seeds == recorded["gnn_seeds"] == [config.SEED, config.SEED + 1]  # the shipped config: as before
    monkeypatch.setitem(config.GNN, "seed", config.SEED + 10)
    planner, recorded = plan(tmp_path, "--seeds", "2", "--keep_encoder")
    seeds = [gnn_job(planner, name).gnn.seed for name in ("train_val", f"train_val seed {config.SEED + 1}")]
    assert seeds == recorded["gnn_seeds"] == [config.SEED + 10, config.SEED + 11]
    # the encoder keeps the pipeline's seed (its own config entry, as shipped)
    assert planner.keys["STE_train"]["optimization"]["seed"] == config.SEED
    planner, _ = plan(tmp_path, "--seed", str(config.SEED + 3))
    assert gnn_job(planner).gnn.seed == config.SEED + 13


def test_a_bad_config_value_is_refused_before_any_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    monkeypatch.setitem(config.GNN, "lr", 0.0)
    monkeypatch.setattr("sys.argv", ["run_pipeline.py", "--preset", "tiny", "--device", "cpu", "--work", str(work)])
    with pytest.raises(util.DataError) as err:
        run_pipeline.main()
    assert str(err.value) == "GNN setting 'lr' must be a number > 0, not 0.0 (config.py's GRAPH / GNN or config.DEMO)"
    assert not (work / layout.STATE_FILE).exists()  # no stage ran
    monkeypatch.setitem(config.GNN, "lr", 1e-3)
    monkeypatch.setitem(config.GNN, "seed", 0)
    monkeypatch.setattr(config, "SEED", 1)  # GNN["seed"] + 0 - 1: below 0
    with pytest.raises(util.DataError, match="GNN setting 'seed' must be an integer in"):
        pipeline_run.checked_settings(pipeline_run.parse_args(["--seed", "0"]), "full")


def test_causal_is_a_field_that_reaches_the_features_and_the_gnn(tmp_path: Path) -> None:
    before, _ = plan(tmp_path)
    assert "causal" not in before.keys["STE_forward"] and gnn_job(before).gnn.causal is False
    causal, recorded = plan(tmp_path, edit=lambda s: {**s, "gnn": replace(s["gnn"], causal=True)})
    assert causal.keys["STE_forward"]["causal"] is True and gnn_job(causal).gnn.causal is True
    assert changed(before, causal) == {"STE_forward", "generate_graph", "train_val"}
    assert recorded["GNN"]["causal"] is True


def test_class_weight_and_cross_identity_reach_the_objects(tmp_path: Path) -> None:
    planner, recorded = plan(tmp_path, "--class_weight", "--cross_identity", "ciy")
    job = gnn_job(planner, "train_val ciy")
    assert job.gnn.class_weight is True and job.graph.cross_identity == "ciy"
    assert recorded["GRAPH"]["cross_identity"] == recorded["cross_identity"] == "ciy"
    assert planner.keys["STE_train"]["optimization"]["class_weight"] is True


def test_the_encoders_seed_entry_seeds_the_pipelines_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """STE_optimization_params["seed"] reaches the encoder as GNN["seed"] reaches the GNN: shifted by each
    later pipeline seed; the GNN keeps its own."""
    planner, _ = plan(tmp_path)
    assert planner.keys["STE_train"]["optimization"]["seed"] == config.SEED
    monkeypatch.setitem(config.STE_optimization_params, "seed", config.SEED + 7)
    planner, _ = plan(tmp_path)
    assert planner.keys["STE_train"]["optimization"]["seed"] == config.SEED + 7
    assert gnn_job(planner).gnn.seed == config.SEED
    planner, _ = plan(tmp_path, "--seed", str(config.SEED + 2))
    assert planner.keys["STE_train"]["optimization"]["seed"] == config.SEED + 9
