"""The registry of systems (systems.py): a system added to it is fitted by train_val.py, written beside the
GNN's predictions, printed in the run's table, and appears in every CV table (per fold, pooled with its
paired GNN − system line, across seeds, in the ablation and in a comparison of two runs) without any
other file naming it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_cv import correlated_sessions, write_fold
from test_temporal import planted, train_args  # noqa: F401  (planted: a module fixture)

from encoder.core import config, layout, metrics
from temporal_gnn import cv_results, gnn_training, graph_data, late_fusion, systems

TOY = systems.System("toy", "toy oracle", "#000000", predictions="predictions_test_toy.csv",
                     description="a test's oracle: the true label of every test segment")


def fit_toy(context: gnn_training.SystemContext) -> gnn_training.SystemResult:
    """The toy system: predicts each test segment's true (first listed) label."""
    graphs = context.graphs["test"]
    ids = list(dict.fromkeys(graph_data.flatten([g.segment_id for g in graphs])))
    _, targets = gnn_training._segment_targets(graphs)
    probs = np.eye(config.NUM_CLASSES)[targets]
    context.log("toy: fitted")
    segment = metrics.classification_metrics(targets, targets)
    test = {"segment": segment, "_segments": (ids, targets, targets, probs)}
    return gnn_training.SystemResult({"segment": segment}, test)


@pytest.fixture
def toy() -> Iterator[systems.System]:
    system = systems.System(**{**TOY.__dict__, "fit": fit_toy})
    systems.register(system)
    try:
        yield system
    finally:
        systems.unregister(system.name)


def test_registry_order_and_lookups() -> None:
    assert systems.names() == ("majority", "encoder", "temporal", "classical", "fusion", "gnn")
    assert [s.name for s in systems.trained()] == ["temporal", "classical", "fusion"]
    assert systems.differences() == {"gnn_minus_encoder": "encoder", "gnn_minus_temporal": "temporal",
                                     "gnn_minus_classical": "classical", "gnn_minus_fusion": "fusion"}
    assert systems.get("temporal").trainer() is gnn_training.fit_temporal
    assert systems.get("fusion").trainer() is late_fusion.fit_fusion
    with pytest.raises(KeyError, match="no system 'video'"):
        systems.get("video")
    with pytest.raises(ValueError, match="registered already"):
        systems.register(systems.get("temporal"))


def test_a_registered_system_is_fitted_written_and_printed_by_train_val(
        toy: systems.System, planted: dict[str, Path], tmp_path: Path,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    assert systems.names()[-2:] == ("toy", "gnn")
    flags = train_args(planted, tmp_path, "--num_epoch", "1", "--exp", "run", "--no_temporal")
    assert gnn_training.parse_args(flags).no_toy is False  # its own --no_toy flag
    assert gnn_training.GnnSettings.from_args(gnn_training.parse_args([*flags, "--no_toy"])).skip == ("temporal", "toy")
    result = gnn_training.run(flags)
    assert result["baselines"]["toy"]["segment"]["macro_f1"] == 1.0
    written = metrics.read_segment_predictions(tmp_path / "run" / toy.predictions)
    gnn = metrics.read_segment_predictions(tmp_path / "run" / "predictions_test.csv")
    assert list(written["segment_ids"]) == list(gnn["segment_ids"])
    assert np.array_equal(written["predictions"], gnn["targets"])
    assert "toy: fitted" in (tmp_path / "run" / "log.txt").read_text()
    gnn_training.print_summary(result)
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.split()]
    assert rows[rows.index("majority"):rows.index("GNN") + 1] == ["majority", "encoder", "toy", "GNN"]
    skipped = gnn_training.run(
        train_args(planted, tmp_path, "--num_epoch", "1", "--exp", "off", "--no_temporal", "--no_toy"))
    assert skipped["baselines"]["toy"] is None and "--no_toy: toy baseline not trained" in skipped["notes"]
    assert not (tmp_path / "off" / toy.predictions).exists()


def toy_folds(tmp_path: Path, name: str = "run") -> tuple[dict[str, np.ndarray], list[Path]]:
    """Two hand-built folds (test_cv.write_fold) with the toy system's predictions: the truth."""
    data = correlated_sessions()
    halves = [list(range(1, 11)), list(range(11, 21))]
    gnn = layout.gnn_folder("audio")
    fold_dirs = [tmp_path / name / f"fold_{k}" for k in range(2)]
    for k, fold_dir in enumerate(fold_dirs):
        write_fold(fold_dir, data, halves[k], halves[1 - k], gnn)
        pred = metrics.read_segment_predictions(fold_dir / gnn / "predictions_test.csv")
        probs = np.full((len(pred["targets"]), config.NUM_CLASSES), 1 / config.NUM_CLASSES)
        metrics.write_segment_predictions(pred["segment_ids"], pred["targets"], pred["targets"], probs,
                                          fold_dir / gnn / TOY.predictions)
    return data, fold_dirs


def test_a_registered_system_appears_in_every_cv_table(toy: systems.System, tmp_path: Path) -> None:
    data, fold_dirs = toy_folds(tmp_path)
    summary = cv_results.summarise(fold_dirs, "audio", seed=0, n_boot=200)
    assert summary["systems"] == ["majority", "encoder", "toy", "gnn"]
    assert summary["pooled"]["toy"]["macro_f1"] == 1.0
    difference = summary["pooled"]["gnn_minus_toy"]
    assert difference["macro_f1"] == pytest.approx(metrics.macro_f1(data["targets"], data["gnn"]) - 1.0)
    text = cv_results.format_summary(summary)
    assert any(line.startswith("toy ") for line in text.splitlines())
    assert "GNN − toy (pooled, paired)" in text
    # the temporal, classical and fusion systems were not trained in these folds: a note each, no row
    assert [note.split()[1] for note in summary["notes"]] == ["temporal", "classical", "fusion"]
    cv_results.write_summary(summary, tmp_path)  # its bar is drawn in its colour

    seeds = cv_results.seeds_summary([summary, summary], [0, 1], keep_encoder=True)
    assert seeds["systems"] == ["majority", "encoder", "toy", "gnn"] and "gnn_minus_toy" in seeds["macro_f1"]
    assert "gnn − toy" in cv_results.format_seeds(seeds)

    ablation = cv_results.ablation_summary(fold_dirs, {"audio": summary}, "audio", n_boot=100)
    assert ablation["rows"][0]["toy"]["macro_f1"] == 1.0
    assert "toy oracle" in cv_results.format_ablation(ablation).splitlines()[2]
    cv_results.write_ablation(ablation, tmp_path)

    _, other = toy_folds(tmp_path, "other")
    comparison = cv_results.compare_runs(tmp_path / "run", tmp_path / "other", "audio", n_boot=100)
    assert comparison["systems"] == ["encoder", "toy", "gnn"]
    assert comparison["rows"]["toy"]["b_minus_a"]["macro_f1"] == 0.0


def test_render_results_names_every_registered_system(toy: systems.System) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_results", Path(__file__).parents[1] / "docs" /
                                                  "render_results.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    assert [render.system_label(n) for n in ("temporal", "classical", "toy")] == ["GRU", "classical", "toy oracle"]


def test_the_classical_cache_folder_is_configurable_and_an_unwritable_one_is_not_fatal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from temporal_gnn import classical

    monkeypatch.setitem(config.CLASSICAL, "cache_dir", tmp_path / "cache")
    assert classical.feature_cache(tmp_path / "root").folder.parent == tmp_path / "cache"
    monkeypatch.setitem(config.CLASSICAL, "cache_dir", None)
    assert classical.feature_cache(tmp_path / "root").folder.parent == tmp_path / "root" / classical.CACHE_DIR
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setitem(config.CLASSICAL, "cache_dir", blocker / "cache")  # cannot be created
    said: list[str] = []
    cache = classical.feature_cache(tmp_path / "root", said.append)
    assert cache.folder is None and len(said) == 1 and "cannot write the cache folder" in said[0]
