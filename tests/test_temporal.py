"""The temporal baseline without a graph (docs/evaluation.md, baselines): speaker windows, the GRU
(causal: no later node), a planted rule that needs a speaker's earlier nodes, its row in metrics.json,
the printed table and the CV summary with the paired GNN − temporal difference."""

from __future__ import annotations

import csv
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import test_gnn
import torch
from test_cv import correlated_sessions, width, write_fold
from test_gnn import graphs_of
from torch_geometric.data import Data

from encoder.core import config, layout, metrics, synthetic_nodes, util
from temporal_gnn import cv_results, gnn_training, graph_data, systems, temporal_model

TEMPORAL_FILE = systems.get("temporal").predictions

DIMS = {"audio": 6, "eda": 2, "temp": 2}
SPLITS = {"train": (1, 2, 3, 4), "val": (5,), "test": (6,)}
CLASSES = 3  # the planted rule uses neutral, happy and surprise
GRAPH_FLAGS = ["--numv", "100", "--time_edge", "4"]

pytestmark = pytest.mark.usefixtures("one_thread")


def marker_session(session: int, n_nodes: int, prototypes: np.ndarray, rng: np.random.Generator,
                   snr: float = 0.0) -> list[tuple]:
    """Stand-in for synthetic_nodes.session_nodes with a planted temporal rule: two speakers take turns
    (segments of 4-10 nodes at 4 Hz, 1-3 s apart); every node's feature is white noise, except that the
    first node of a segment carries its class as a one-hot marker (x4) in the audio block. A node read
    alone tells its class only at a segment's start; the speaker's earlier nodes tell it everywhere."""
    dim = prototypes.shape[1]
    identities = [f"User{2 * session - 1:03d}F", f"User{2 * session:03d}M"]
    rows: list[tuple] = []
    clock, turn = 36000.0, 0
    while len(rows) < n_nodes:
        who = identities[turn % 2]
        turn += 1
        target = int(rng.integers(CLASSES))
        label = np.zeros(config.NUM_CLASSES, dtype=np.float32)
        label[target] = 1.0
        features = rng.standard_normal((int(rng.integers(4, 11)), dim)).astype(np.float32)
        features[0, target] += 4.0
        segment_id = f"Sess{session:02d}_script01_{who}_{turn:03d}"
        for k, feature in enumerate(features):
            rows.append((session, clock + k * config.BIO_STEP_S, who, label, target, segment_id, feature))
        clock += (len(features) + int(rng.integers(4, 13))) * config.BIO_STEP_S
    return rows


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("temporal")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic_nodes, "session_nodes", marker_session)
        synthetic_nodes.write_synthetic_nodes(root / "features", SPLITS, nodes_per_session=300, feature_dims=DIMS)
    return graphs_of(root, GRAPH_FLAGS)


def train_args(data: dict[str, Path], results: Path, *extra: str) -> list[str]:
    return test_gnn.train_args(data, results, *extra, graph_flags=GRAPH_FLAGS)


@pytest.fixture(scope="module")
def trained(planted: dict[str, Path]) -> dict:
    return gnn_training.run(train_args(planted, planted["root"] / "results", "--num_epoch", "25", "--exp", "run"))


def node_table(features: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    paths = sorted((features / f"features_{split}").glob("*.pkl"))
    rows = [r for path in paths for r in pickle.loads(path.read_bytes())]
    return np.stack([r[6] for r in rows]), np.array([r[4] for r in rows])


# --------------------------------------------------------------------------- windows and model


def graph(session: int, times: list[float], identities: list[str], first: int) -> Data:
    """A graph of nodes numbered from `first` (their feature and segment ID say their number)."""
    n = len(times)
    return Data(x=torch.arange(first, first + n, dtype=torch.float32)[:, None], y=torch.zeros(n, config.NUM_CLASSES),
                target=torch.zeros(n, dtype=torch.long), time_s=torch.tensor(times, dtype=torch.float64),
                session=torch.full((n,), session), segment_id=[f"s{i}" for i in range(first, first + n)],
                identity=identities, edge_index=torch.zeros(2, 0, dtype=torch.long))


def test_speaker_windows_are_time_sorted_per_speaker_and_cut_by_span() -> None:
    # session 1 in two graphs, speakers A and B interleaved; session 2 one speaker A
    graphs = [graph(1, [0.0, 0.0, 1.0, 2.5], ["A", "B", "A", "A"], 0),
              graph(1, [3.0, 5.0, 4.0], ["B", "A", "A"], 4),
              graph(2, [0.0, 2.0], ["A", "A"], 7)]
    windows = graph_data.speaker_windows(graphs, span_s=3.0)
    # A of session 1 at 0, 1, 2.5 | 4, 5 (4 is 3 s or more after 0); B at 0, 3 are exactly 3 s apart: cut
    got = [(int(w.session[0]), w.identity, w.time_s.tolist()) for w in windows]
    assert got == [(1, ["A", "A", "A"], [0.0, 1.0, 2.5]), (1, ["A", "A"], [4.0, 5.0]),
                   (1, ["B"], [0.0]), (1, ["B"], [3.0]), (2, ["A", "A"], [0.0, 2.0])]
    assert [w.x[:, 0].tolist() for w in windows[:2]] == [[0.0, 2.0, 3.0], [6.0, 5.0]]  # features follow their node
    assert windows[1].segment_id == ["s6", "s5"] and windows[0].edge_index is None
    assert graph_data.windows_per_batch(graphs, windows, 4) == round(4 * (9 / 3) / (9 / 5))
    with pytest.raises(ValueError, match="positive"):
        graph_data.speaker_windows(graphs, 0.0)


def test_parameter_count_of_default_model() -> None:
    dims = {"audio": 512, "eda": 512, "temp": 512}
    assert util.count_parameters(temporal_model.TemporalGRU(dims)) == 149_447  # temporal_model's docstring
    assert util.count_parameters(temporal_model.TemporalGRU(dims, causal=True)) == 124_039


def test_causal_model_reads_no_later_node_and_the_modalities_it_is_given() -> None:
    torch.manual_seed(0)
    x = torch.randn(20, 10)
    batch = torch.tensor([0] * 12 + [1] * 8)
    changed = x.clone()
    changed[9] += 5.0  # a later node of the first sequence
    causal = temporal_model.TemporalGRU(DIMS, causal=True).eval()
    before, after = causal(x, batch), causal(changed, batch)
    assert torch.equal(after[:9], before[:9]) and torch.equal(after[12:], before[12:])  # exactly unchanged
    assert not torch.allclose(after[9:12], before[9:12])
    bidirectional = temporal_model.TemporalGRU(DIMS).eval()
    assert not torch.allclose(bidirectional(changed, batch)[:9], bidirectional(x, batch)[:9])  # reads ahead
    assert torch.equal(bidirectional(changed, batch)[12:], bidirectional(x, batch)[12:])  # not across sequences
    eda = temporal_model.TemporalGRU(DIMS, ["eda"]).eval()
    other = x.clone()
    other[:, :6] += 3.0  # the audio block
    other[:, 8:] -= 3.0  # the temp block
    assert torch.equal(eda(other, batch), eda(x, batch))
    with pytest.raises(ValueError, match="modalities"):
        temporal_model.TemporalGRU(DIMS, ["video"])


# --------------------------------------------------------------------------- train_val


def test_temporal_baseline_learns_a_rule_a_per_node_classifier_cannot(trained: dict, planted: dict[str, Path]) -> None:
    from sklearn.linear_model import LogisticRegression

    temporal = trained["baselines"]["temporal"]
    x_train, y_train = node_table(planted["features"], "train")
    x_test, y_test = node_table(planted["features"], "test")
    per_node = LogisticRegression(max_iter=1000).fit(x_train, y_train).predict(x_test)
    per_node_f1 = metrics.macro_f1(y_test, per_node)
    assert per_node_f1 < 0.6  # a segment's first node only
    assert temporal["node"]["macro_f1"] > per_node_f1 + 0.25
    assert temporal["node"]["macro_f1"] > trained["baselines"]["majority"]["node"]["macro_f1"] + 0.5
    assert temporal["node"]["n"] == len(y_test)


def test_metrics_json_and_summary_have_the_temporal_row(trained: dict, capsys: pytest.CaptureFixture) -> None:
    out = Path(trained["metrics_path"]).parent
    stored = util.read_json(out / "metrics.json")
    temporal = stored["baselines"]["temporal"]
    assert {"node", "segment", "best", "model", "window_s", "history"} <= set(temporal)
    assert temporal["window_s"] == 2 * 3 * 4.0 and temporal["model"]["config"]["causal"] is False
    assert temporal["model"]["parameters"] == util.count_parameters(temporal_model.TemporalGRU(DIMS, channel1=16))
    # selected like the GNN: the best validation segment macro-F1 over the epochs, evaluated every epoch
    assert temporal["best"]["val_segment_macro_f1"] == max(temporal["history"]["val_segment_macro_f1"])
    assert temporal["history"]["val_epoch"] == list(range(1, 26))
    with open(out / TEMPORAL_FILE, encoding="utf-8") as fh:
        rows = {row["segment_id"]: row for row in csv.DictReader(fh)}
    with open(out / "predictions_test.csv", encoding="utf-8") as fh:
        assert set(rows) == {row["segment_id"] for row in csv.DictReader(fh)}  # the GNN's test segments
    assert temporal["segment"]["n"] == len(rows)
    gnn_training.print_summary(trained)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[-7:-3]] == ["majority", "encoder", "temporal", "GNN"]
    assert lines[-5].split()[1:] == [f"{temporal['segment'][k]:.4f}" for k in ("accuracy", "macro_f1", "weighted_f1")]


def test_no_temporal_and_causal(planted: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    skipped = gnn_training.run(
        train_args(planted, tmp_path, "--num_epoch", "1", "--exp", "off", "--no_temporal"))
    assert skipped["baselines"]["temporal"] is None and any("--no_temporal" in n for n in skipped["notes"])
    assert not (tmp_path / "off" / TEMPORAL_FILE).exists()
    gnn_training.print_summary(skipped)
    assert [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()[-6:-3]] == [
        "majority", "encoder", "GNN"]
    causal = gnn_training.run(
        train_args(planted, tmp_path, "--num_epoch", "2", "--exp", "causal", "--causal"))
    assert causal["baselines"]["temporal"]["model"]["config"]["causal"] is True
    assert (tmp_path / "causal" / TEMPORAL_FILE).is_file()


def without_run_names(value: object) -> object:
    """metrics.json without what differs between two runs of the same model: wall times and the run's name."""
    if isinstance(value, dict):
        return {k: without_run_names(v) for k, v in value.items()
                if k not in ("seconds", "exp", "temporal_beside", "metrics_path")}
    if isinstance(value, list):
        return [without_run_names(v) for v in value]
    return value


def test_temporal_baseline_beside_the_gnn_gives_the_sequential_runs_results(
        planted: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gnn_training.os, "sched_getaffinity", lambda _pid: {0, 1})  # a core to spare, as in CI
    runs = {}
    for exp, extra in (("beside", []), ("series", ["--temporal_in_series"])):
        flags = train_args(planted, tmp_path, "--num_epoch", "4", "--exp", exp, *extra)
        settings = gnn_training.GnnSettings.from_args(gnn_training.parse_args(flags))
        assert gnn_training.temporal_beside(settings, torch.device("cpu")) is (exp == "beside")
        runs[exp] = gnn_training.run(flags)
    assert runs["beside"]["baselines"]["temporal"]["history"]["epoch"] == [1, 2, 3, 4]
    assert without_run_names(runs["beside"]) == without_run_names(runs["series"])
    for name in (TEMPORAL_FILE, "predictions_test.csv"):
        assert (tmp_path / "beside" / name).read_bytes() == (tmp_path / "series" / name).read_bytes()
    logs = {exp: (tmp_path / exp / "log.txt").read_text().splitlines() for exp in runs}
    assert logs["beside"][2:] == logs["series"][2:]  # the args line names the run; the temporal lines follow the GNN's
    assert sum(line.startswith("temporal epoch") for line in logs["beside"]) == 4


def test_temporal_baseline_beside_runs_only_on_a_cpu_with_a_core_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    args = gnn_training.GnnSettings.from_args(gnn_training.parse_args(["--threads", "2"]))
    monkeypatch.setattr(gnn_training.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert gnn_training.temporal_beside(args, torch.device("cpu"))
    assert not gnn_training.temporal_beside(args, torch.device("cuda", 0))
    assert not gnn_training.temporal_beside(replace(args, temporal_beside=False), torch.device("cpu"))
    monkeypatch.setattr(gnn_training.os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    assert not gnn_training.temporal_beside(args, torch.device("cpu"))


def test_temporal_baseline_failing_beside_the_gnn_fails_the_run_and_writes_nothing(
        planted: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gnn_training.os, "sched_getaffinity", lambda _pid: {0, 1})

    def fails(*_args: object, **_kwargs: object) -> None:
        raise ValueError("no windows")

    monkeypatch.setattr(gnn_training, "fit_temporal", fails)  # the forked process inherits the patch
    with pytest.raises(RuntimeError, match="the temporal baseline failed: ValueError: no windows"):
        gnn_training.run(train_args(planted, tmp_path, "--num_epoch", "1", "--exp", "failed"))
    assert not (tmp_path / "failed").exists()


# --------------------------------------------------------------------------- CV summary


def cv_folds(tmp_path: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """Two hand-built folds (test_cv.write_fold) plus temporal predictions: the encoder's with a tenth
    of its errors fixed, so that the GNN (a fifth fixed) is better and errs with it."""
    data = correlated_sessions()
    fixed = np.random.default_rng(1).random(len(data["targets"])) < 0.1
    data["temporal"] = np.where(fixed, data["targets"], data["encoder"])
    halves = [list(range(1, 11)), list(range(11, 21))]
    gnn = layout.gnn_folder("audio")
    fold_dirs = [tmp_path / f"fold_{k}" for k in range(2)]
    for k, fold_dir in enumerate(fold_dirs):
        write_fold(fold_dir, data, halves[k], halves[1 - k], gnn)
        predictions = metrics.read_segment_predictions(fold_dir / gnn / cv_results.GNN_PREDICTIONS_FILE)
        mine = np.isin(data["sessions"], halves[k])
        probs = np.full((mine.sum(), config.NUM_CLASSES), 1 / config.NUM_CLASSES)
        metrics.write_segment_predictions(predictions["segment_ids"][::-1], data["targets"][mine][::-1],
                                          data["temporal"][mine][::-1], probs,  # another order: aligned by ID
                                          fold_dir / gnn / TEMPORAL_FILE)
    return data, fold_dirs


def test_cv_summary_has_temporal_and_a_paired_gnn_minus_temporal(tmp_path: Path) -> None:
    data, fold_dirs = cv_folds(tmp_path)
    summary = cv_results.summarise(fold_dirs, "audio", seed=0, n_boot=500)
    assert summary["systems"] == ["majority", "encoder", "temporal", "gnn"]
    assert not [note for note in summary["notes"] if "no temporal baseline" in note]  # (they lack a classical one)
    targets = data["targets"]
    for fold, half in zip(summary["folds"], (range(1, 11), range(11, 21)), strict=True):
        mine = np.isin(data["sessions"], list(half))
        assert fold["segment"]["temporal"]["macro_f1"] == pytest.approx(
            metrics.macro_f1(targets[mine], data["temporal"][mine]))
    pooled = summary["pooled"]
    assert pooled["temporal"]["macro_f1"] == pytest.approx(metrics.macro_f1(targets, data["temporal"]))
    assert pooled["temporal"]["n_sessions"] == 20 and pooled["temporal"]["ci95"][0] <= pooled["temporal"]["macro_f1"]
    diff = pooled["gnn_minus_temporal"]
    assert diff["paired"] is True
    assert diff["macro_f1"] == pytest.approx(pooled["gnn"]["macro_f1"] - pooled["temporal"]["macro_f1"])
    assert diff["ci95"][0] <= diff["macro_f1"] <= diff["ci95"][1] and diff["ci95"][0] > 0
    assert width(diff) < width(pooled["temporal"])  # paired: the shared session effect cancels
    text = cv_results.format_summary(summary).splitlines()
    assert [line.split()[0] for line in text[2:6]] == ["majority", "encoder", "temporal", "gnn"]
    assert (f"GNN − temporal (pooled, paired): {diff['macro_f1']:+.4f} [{diff['ci95'][0]:+.4f}, "
            f"{diff['ci95'][1]:+.4f}] over 20 sessions") in text
    assert any(line.startswith("GNN − encoder (pooled, paired)") for line in text)
    path = cv_results.write_summary(summary, tmp_path)
    assert util.read_json(path)["pooled"]["gnn_minus_temporal"] == diff


def test_cv_summary_of_folds_without_a_temporal_baseline_leaves_it_out_with_a_note(tmp_path: Path) -> None:
    _, fold_dirs = cv_folds(tmp_path)
    old = fold_dirs[1] / layout.gnn_folder("audio")
    (old / TEMPORAL_FILE).unlink()  # a fold trained before the temporal baseline
    summary = cv_results.summarise(fold_dirs, "audio", seed=0, n_boot=200)
    assert summary["systems"] == ["majority", "encoder", "gnn"]
    assert "temporal" not in summary["pooled"] and "gnn_minus_temporal" not in summary["pooled"]
    assert all("temporal" not in fold["segment"] for fold in summary["folds"])
    notes = [note for note in summary["notes"] if "no temporal baseline" in note]
    assert len(notes) == 1 and str(old) in notes[0] and str(fold_dirs[0]) not in notes[0]
    text = cv_results.format_summary(summary)
    assert f"note: {notes[0]}" in text and "GNN − temporal (pooled" not in text
    cv_results.write_summary(summary, tmp_path)  # the figure draws three bars per fold
