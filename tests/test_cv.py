"""Session cross-validation and what makes its numbers trustworthy: folds, the session bootstrap,
macro-F1 over the classes present, stale state refused, and a two-fold CV on the tiny preset."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from script_module import load_script

from encoder.core import checkpoints, config, extraction, frames, kemdy20, layout, metrics, util
from encoder.core.custom_transforms import Normalization
from encoder.core.models import STEncoder
from encoder.core.synthetic_nodes import write_synthetic_nodes
from temporal_gnn import cv_results, graph_building, graph_data, stages

run_pipeline = load_script(config.REPO_ROOT / "run_pipeline.py")  # the script, for its main() in this process
TINY_SETTINGS = {
    "preset": "tiny",
    "STE_inputs": {"sample_rate": 4000, "n_fft": 256, "win_length": 250, "hop_length": 250, "n_mels": 16,
                   "fmax": None},
    "STE_optimization_params": {"epochs": 1, "scheduler_T_max": 1, "batch_size": 8, "num_workers": 0,
                                "val_step_stride": 2, "progress": False},
    "GRAPH": {"numv": 40},
    "GNN": {"batch_size": 4, "num_epoch": 2, "patience": 0, "channel1": 16, "channel2": 8},
}

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- folds


@pytest.mark.parametrize(("sessions", "k"), [(range(1, 41), 5), ([1, 2, 33, 37], 2),
                                             ([*range(1, 9), 33, 34, 37, 38], 5), (range(1, 11), 3)])
def test_folds_are_disjoint_and_test_every_session_once(sessions, k) -> None:
    sessions = list(sessions)
    folds = [util.cv_splits(sessions, k, fold) for fold in range(k)]
    tested = [s for f in folds for s in f["test"]]
    assert sorted(tested) == sorted(sessions)  # every session tested exactly once
    for f in folds:
        train, val, test = set(f["train"]), set(f["val"]), set(f["test"])
        assert train and val and test
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(sessions)
    assert folds == [util.cv_splits(sessions, k, fold) for fold in range(k)]  # deterministic


def test_folds_test_contiguous_blocks_and_train_as_much_as_the_default_split() -> None:
    assert util.cv_folds(range(1, 41), 5)[1] == tuple(range(9, 17))
    # 40 sessions, 5 folds: test 8; of the other 32, validation round(32 * 4/36) = round(3.56) = 4, evenly spaced
    # (the middle of each stretch of 8: 0-based positions 4, 12, 20, 28 of the 32); train 28 (default split: 32)
    for fold in range(5):
        splits = util.cv_splits(range(1, 41), 5, fold)
        assert (len(splits["test"]), len(splits["val"]), len(splits["train"])) == (8, 4, 28)
    rest = list(range(1, 33))  # fold 4 tests 33-40
    val = (5, 13, 21, 29)
    assert util.cv_splits(range(1, 41), 5, 4) == {
        "train": tuple(s for s in rest if s not in val), "val": val, "test": tuple(range(33, 41))}
    assert util.cv_splits(range(1, 41), 5, 0)["val"] == (13, 21, 29, 37)  # rest 9-40: positions 4, 12, 20, 28
    # 12 sessions, 5 folds of 3, 3, 2, 2, 2: fold 0 leaves 9, round(9 * 4/36) = 1 validates (position 4)
    assert util.cv_splits([*range(1, 9), 33, 34, 37, 38], 5, 0) == {
        "train": (4, 5, 6, 7, 33, 34, 37, 38), "val": (8,), "test": (1, 2, 3)}
    # 28 sessions, 2 folds: 14 left, round(14 * 4/36) = round(1.56) = 2 validate (positions 3 and 10)
    assert util.cv_splits(range(1, 29), 2, 1)["val"] == (4, 11)
    # at least one validation session and one training session
    assert util.cv_splits([1, 2, 33, 37], 2, 0) == {"train": (33,), "val": (37,), "test": (1, 2)}
    assert util.cv_splits([1, 2, 33, 37], 2, 1) == {"train": (1,), "val": (2,), "test": (33, 37)}
    with pytest.raises(ValueError, match="do not fit"):
        util.cv_folds([1, 2, 3], 4)
    with pytest.raises(ValueError, match="one validation and one training session"):
        util.cv_splits([1, 2, 3], 2, 0)


def test_explicit_splits_are_never_re_split(monkeypatch: pytest.MonkeyPatch) -> None:
    # `--cv K` is the one CV mechanism: a fold's explicit splits must come back as they are, whatever
    # config says (a config-level K_FOLDS once re-split them and put a fold's test sessions into training)
    assert not hasattr(config, "K_FOLDS") and not hasattr(config, "FOLD")
    fold = {"train": [9, 10, 11], "val": [12], "test": [1, 2]}
    monkeypatch.setattr(config, "K_FOLDS", 5, raising=False)
    monkeypatch.setattr(config, "FOLD", 1, raising=False)
    assert util.session_splits(fold) == {"train": (9, 10, 11), "val": (12,), "test": (1, 2)}
    monkeypatch.setattr(config, "SPLITS", {"train": (3,), "val": (4,), "test": (5,)})
    assert util.session_splits() == {"train": (3,), "val": (4,), "test": (5,)}
    assert util.split_of_session(2, fold) == "test"


# --------------------------------------------------------------------------- metrics


def test_macro_f1_averages_the_classes_present_in_the_truth() -> None:
    # truth has classes 0 and 1 only; class 2 is predicted once (a false positive) but is absent.
    # class 0: tp 2, fp 1 (the 1 predicted as 0), fn 1 (the 0 predicted as 2) -> F1 = 4 / (4 + 1 + 1) = 2/3
    # class 1: tp 1, fp 0, fn 1 -> F1 = 2 / (2 + 0 + 1) = 2/3
    y_true = [0, 0, 0, 1, 1]
    y_pred = [0, 0, 2, 0, 1]
    m = metrics.classification_metrics(y_true, y_pred)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["macro_f1_7class"] == pytest.approx((2 / 3 + 2 / 3) / 7)  # the five absent classes score 0
    assert m["classes_present"] == ["neutral", "happy"]
    assert metrics.macro_f1([], []) == 0.0


def test_session_bootstrap_worked_by_hand() -> None:
    # two sessions with statistic = mean of the sample values: session A holds 0s, session B 1s.
    # A resample draws two sessions with replacement: AA (mean 0), AB or BA (0.5), BB (1); the 95%
    # percentile interval over many resamples is therefore [0, 1], and the estimate is the full-data mean.
    groups = np.array(["A", "A", "B", "B"])
    values = np.array([0.0, 0.0, 1.0, 1.0])
    result = metrics.session_bootstrap(groups, lambda idx: float(values[idx].mean()), n_boot=400, seed=3,
                                       min_groups=1)
    assert result["estimate"] == 0.5
    assert result["ci95"] == [0.0, 1.0]
    assert result["n_groups"] == 2
    assert metrics.session_bootstrap(groups, lambda idx: float(values[idx].mean()), n_boot=400, seed=3,
                                     min_groups=1) == result


def test_no_interval_below_the_minimum_number_of_sessions() -> None:
    values = np.arange(16.0)
    mean = lambda idx: float(values[idx].mean())  # noqa: E731
    below = metrics.session_bootstrap(np.repeat(np.arange(7), [3, 3, 2, 2, 2, 2, 2]), mean, n_boot=50)
    assert below == {"estimate": 7.5, "ci95": None, "n_groups": 7, "n_boot": 50, "seed": 0}
    at = metrics.session_bootstrap(np.repeat(np.arange(8), 2), mean, n_boot=50)
    assert metrics.MIN_SESSIONS_FOR_INTERVAL == 8 and at["ci95"][0] < 7.5 < at["ci95"][1]
    assert metrics.format_estimate({"macro_f1": 0.5, "ci95": None}, 1) == "0.5000 [n/a (1 session)]"
    assert metrics.format_estimate({"macro_f1": -0.25, "ci95": None}, 4, "+") == "-0.2500 [n/a (4 sessions)]"
    assert metrics.format_estimate({"macro_f1": 0.25, "ci95": [0.0, 0.5]}, 9, "+") == "+0.2500 [+0.0000, +0.5000]"


def test_macro_f1_over_given_labels_worked_by_hand() -> None:
    from sklearn.metrics import f1_score

    # truth 0, 0, 1, 2; prediction 0, 1, 1, 1. Over the classes present (0, 1, 2):
    # class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 2, fn 0 -> 2/4; class 2: 0 -> mean 7/18
    y_true, y_pred = [0, 0, 1, 2], [0, 1, 1, 1]
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx(7 / 18)
    # a resample that lost class 2 but is scored over the full truth's classes keeps class 2 at 0
    assert metrics.macro_f1([0, 0, 1], [0, 1, 1], labels=[0, 1, 2]) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert metrics.macro_f1([0, 0, 1], [0, 1, 1]) == pytest.approx(2 / 3)
    for truth, pred in (([0, 0, 1], [0, 1, 1]), ([1, 1], [1, 3]), ([0, 4, 4], [4, 4, 6])):
        assert metrics.macro_f1(truth, pred, labels=[0, 1, 4]) == pytest.approx(
            f1_score(truth, pred, labels=[0, 1, 4], average="macro", zero_division=0))


def test_pooled_interval_averages_over_the_full_truths_classes() -> None:
    # eight sessions of two segments. Sessions 1-7: truth [0, 0], predicted right. Session 8: truth [0, 1],
    # predicted [0, 0]. With session 8 drawn m times of 8 (binomial, p = 1/8): class 0 has 16 - m true
    # segments, all 16 predicted 0 -> F1 (32 - 2m) / (32 - m); class 1 F1 = 0. Over the full truth's classes
    # (0, 1) a resample scores (32 - 2m) / (32 - m) / 2: m = 0 (chance 34%) gives 0.5, m = 1 15/31 (the full
    # data's figure), m = 3 13/29; P(m >= 3) = 6.7% and P(m >= 4) = 1.1%, so the interval is [13/29, 0.5].
    # Over each resample's own classes, m = 0 would score 1.0 (class 1 absent) and the top would be 1.0.
    sessions = np.repeat(np.arange(1, 9), 2)
    targets = np.zeros(16, dtype=int)
    targets[-1] = 1
    predictions = np.zeros(16, dtype=int)
    pooled = cv_results.pooled_macro_f1(sessions, targets, predictions, n_boot=500, seed=0)
    assert pooled["macro_f1"] == pytest.approx(15 / 31)
    assert pooled["ci95"] == pytest.approx([13 / 29, 0.5])
    difference = cv_results.paired_difference(sessions, targets, targets, predictions, n_boot=500, seed=0)
    # `first` right everywhere: 1.0 with session 8 drawn, else 0.5 (class 1 scored 0 in both): 0 for m = 0
    assert difference["macro_f1"] == pytest.approx(1 - 15 / 31)
    assert difference["ci95"] == pytest.approx([0.0, 1 - 13 / 29])


def test_session_bootstrap_is_wider_with_fewer_sessions_and_contains_the_estimate() -> None:
    rng = np.random.default_rng(0)
    session_means = rng.normal(0.5, 0.1, size=40)

    def interval(n_sessions: int) -> dict:
        groups = np.repeat(np.arange(n_sessions), 10)
        values = np.repeat(session_means[:n_sessions], 10) + rng.normal(0, 0.01, size=10 * n_sessions)
        return metrics.session_bootstrap(groups, lambda idx: float(values[idx].mean()), n_boot=1000, seed=0,
                                         min_groups=5)

    few, many = interval(5), interval(40)
    for result in (few, many):
        assert result["ci95"][0] <= result["estimate"] <= result["ci95"][1]
    assert few["ci95"][1] - few["ci95"][0] > many["ci95"][1] - many["ci95"][0]


def test_cv_results_does_not_import_the_gnn_stack() -> None:
    # the CV summary only reads CSV/JSON and draws figures: no torch_geometric, no GNN training
    repo = Path(__file__).resolve().parents[1]
    code = ("import sys; from temporal_gnn import cv_results; "
            "print('torch_geometric' in sys.modules, 'temporal_gnn.gnn_training' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    assert result.stdout.split() == ["False", "False"]


def correlated_sessions(n_sessions: int = 20, per_session: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Binary targets whose errors are shared within a session and between two systems: the encoder is
    right on 85% of an easy session's segments and 15% of a hard one's (half the sessions each); the
    GNN makes the encoder's predictions but fixes a fifth of its errors, so the two systems err together."""
    rng = np.random.default_rng(seed)
    sessions = np.repeat(np.arange(1, n_sessions + 1), per_session)
    targets = rng.integers(2, size=len(sessions))
    easy = np.repeat(rng.permutation(n_sessions) < n_sessions // 2, per_session)
    encoder_right = rng.random(len(sessions)) < np.where(easy, 0.85, 0.15)
    gnn_right = encoder_right | (rng.random(len(sessions)) < 0.2)
    return {"sessions": sessions, "targets": targets,
            "encoder": np.where(encoder_right, targets, 1 - targets), "gnn": np.where(gnn_right, targets, 1 - targets)}


def width(interval: dict) -> float:
    return interval["ci95"][1] - interval["ci95"][0]


def test_session_bootstrap_is_wider_than_a_segment_bootstrap_when_sessions_are_correlated() -> None:
    # 20 sessions of 10 segments, each session all right or all wrong: accuracy 0.5 either way, but only
    # 20 independent units. Resampling sessions: sd sqrt(0.25 / 20) = 0.11; resampling the 200 segments
    # as if independent (each its own group): sd sqrt(0.25 / 200) = 0.035, about 3.2 times narrower.
    sessions = np.repeat(np.arange(20), 10)
    right = np.repeat(np.arange(20) % 2, 10).astype(float)
    accuracy = lambda idx: float(right[idx].mean())  # noqa: E731
    by_session = metrics.session_bootstrap(sessions, accuracy, n_boot=2000, seed=0)
    by_segment = metrics.session_bootstrap(np.arange(len(sessions)), accuracy, n_boot=2000, seed=0)
    assert by_session["estimate"] == by_segment["estimate"] == 0.5
    assert by_session["n_groups"] == 20 and by_segment["n_groups"] == 200
    assert by_segment["ci95"][1] - by_segment["ci95"][0] == pytest.approx(2 * 1.96 * 0.5 / np.sqrt(200), rel=0.2)
    assert width(by_session) > 2.5 * width(by_segment)


def write_fold(fold_dir: Path, data: dict[str, np.ndarray], test: list[int], rest: list[int], gnn: str) -> None:
    """A finished CV fold folder as run_pipeline writes it, holding only what cv_results reads."""
    mine = np.isin(data["sessions"], test)
    ids = [f"Sess{s:02d}_script01_User{2 * s - 1:03d}F_{i:03d}" for i, s in enumerate(data["sessions"][mine])]
    probs = np.full((len(ids), config.NUM_CLASSES), 1 / config.NUM_CLASSES)
    util.write_json({"train": rest[1:], "val": rest[:1], "test": test}, fold_dir / "splits.json")
    util.write_json({"baselines": {"majority": {"class": config.EMOTIONS[0]}}}, fold_dir / gnn / "metrics.json")
    for system, path in (("gnn", fold_dir / gnn / "predictions_test.csv"),
                         ("encoder", fold_dir / "features" / extraction.PREDICTIONS_FILE)):
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_segment_predictions(ids, data["targets"][mine], data[system][mine], probs, path)


HALVES = [list(range(1, 11)), list(range(11, 21))]  # the two folds' test sessions


def two_correlated_folds(tmp_path: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """correlated_sessions() written as two folds (sessions 1-10 and 11-20 each tested once)."""
    data = correlated_sessions()
    fold_dirs = [tmp_path / f"fold_{k}" for k in range(2)]
    for k, fold_dir in enumerate(fold_dirs):
        write_fold(fold_dir, data, HALVES[k], HALVES[1 - k], layout.gnn_folder("audio"))
    return data, fold_dirs


def test_paired_difference_is_narrower_than_an_unpaired_one_when_errors_correlate(tmp_path: Path) -> None:
    data, fold_dirs = two_correlated_folds(tmp_path)
    summary = cv_results.summarise(fold_dirs, "audio", seed=0, n_boot=1000)
    paired = summary["pooled"]["gnn_minus_encoder"]
    targets = data["targets"]
    f1 = {name: (lambda idx, y=data[name]: metrics.macro_f1(targets[idx], y[idx])) for name in ("gnn", "encoder")}
    everything = np.arange(len(targets))
    assert paired["macro_f1"] == pytest.approx(f1["gnn"](everything) - f1["encoder"](everything))
    # unpaired: the two systems' sessions resampled independently of each other
    members = [np.flatnonzero(data["sessions"] == s) for s in range(1, 21)]
    rng = np.random.default_rng(0)
    draws = [np.concatenate([members[g] for g in rng.integers(20, size=20)]) for _ in range(2000)]
    unpaired = np.percentile([f1["gnn"](a) - f1["encoder"](b) for a, b in zip(draws[::2], draws[1::2], strict=True)],
                             [2.5, 97.5])
    assert paired["ci95"][0] <= paired["macro_f1"] <= paired["ci95"][1]
    assert unpaired[0] <= paired["macro_f1"] <= unpaired[1]
    assert width(paired) < 0.5 * (unpaired[1] - unpaired[0])
    assert paired["ci95"][0] > 0 > unpaired[0]  # only the paired interval sees that the GNN is better


def test_fold_spread_is_the_sample_sd_and_the_header_says_so(tmp_path: Path) -> None:
    data, fold_dirs = two_correlated_folds(tmp_path)
    summary = cv_results.summarise(fold_dirs, "audio", seed=0, n_boot=200)
    for name in ("encoder", "gnn"):
        a, b = (metrics.macro_f1(data["targets"][mine], data[name][mine])
                for mine in (np.isin(data["sessions"], half) for half in HALVES))
        assert a != b
        # two values: sample sd |a - b| / sqrt(2); the population sd (ddof=0) would be |a - b| / 2
        assert summary["mean_std"][name]["macro_f1"] == pytest.approx([(a + b) / 2, abs(a - b) / np.sqrt(2)])
    text = cv_results.format_summary(summary).splitlines()
    assert "mean ± sd (ddof=1)" in text[1]
    sd = summary["mean_std"]["gnn"]["macro_f1"][1]
    assert any(line.startswith("gnn ") and f" ± {sd:.4f} " in line for line in text)


# --------------------------------------------------------------------------- stale state


def test_extraction_refuses_an_encoder_fitted_on_other_sessions(tmp_path: Path) -> None:
    state = checkpoints.encoder_state(STEncoder(), Normalization.unit(("eda", "temp")), {"clip_length": 11},
                                      splits={"train": [1, 2], "val": [33], "test": [37]})
    path = tmp_path / "best.pth"
    torch.save(state, path)
    with pytest.raises(util.DataError, match=r"trained on sessions .*'train': \[1, 2\].* trained on .*\[1\]") as err:
        extraction.extract_features(11, "cpu", root=tmp_path, checkpoint=path, out_dir=tmp_path / "features",
                                    splits={"train": (1,), "val": (33,), "test": (37,)}, log=None)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "features" / "manifest.json").exists()


def test_dataframe_stage_reruns_when_the_files_it_reads_change(tiny_raw: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "KEMDy20"
    shutil.copytree(tiny_raw, root)
    data_key = {"root": str(root)}  # what a real root's stage key held alone before the fingerprint

    def frames_stage() -> str:
        pipeline = stages.Pipeline(tmp_path / "pipeline_state.json", force=False)
        stages.frames_stage(pipeline, root, data_key)
        return capsys.readouterr().out

    assert "[frames] running" in frames_stage()
    assert "[frames] up to date, skipped" in frames_stage()
    eda = kemdy20.bio_files(root, "EDA")[0]
    stat = eda.stat()
    os.utime(eda, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched (or edited in place)
    assert "[frames] running" in frames_stage()
    assert "[frames] up to date, skipped" in frames_stage()
    extra = root / "EDA" / "Session41" / "Sess41_script01_User081F.csv"  # a new file (of an unannotated session)
    extra.parent.mkdir()
    shutil.copy(kemdy20.bio_files(root, "TEMP")[-1], extra)
    assert "[frames] running" in frames_stage()
    wav = kemdy20.wav_files(root)[0]
    wav.unlink()
    assert "[frames] running" in frames_stage()
    assert wav.stem not in set(frames.load_frames(root).gt["segment_id"])  # the stale table is gone
    assert "[frames] up to date, skipped" in frames_stage()


DIMS = {"audio": 8, "eda": 4, "temp": 4}
SPLITS = {"train": (1, 2), "val": (3,), "test": (4,)}


def graph_args(features: Path, graphs: Path) -> list[str]:
    return ["--features_dir", str(features), "--graphs_dir", str(graphs), "--numv", "60"]


def test_generate_graph_refuses_node_files_that_do_not_match_the_manifest(tmp_path: Path) -> None:
    features = tmp_path / "features"
    write_synthetic_nodes(features, SPLITS, nodes_per_session=80, feature_dims=DIMS, seed=1)
    args = graph_args(features, tmp_path / "graphs")
    (features / "features_train" / "Sess02.pkl").unlink()
    with pytest.raises(util.DataError, match=r"do not match the feature manifest's train sessions") as err:
        graph_building.run(args)
    assert "Sess02.pkl" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "graphs").exists()

    write_synthetic_nodes(features, SPLITS, nodes_per_session=80, feature_dims=DIMS, seed=1)
    path = features / "features_test" / "Sess04.pkl"
    rows = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps(rows[:-5]))
    with pytest.raises(util.DataError, match=rf"{len(rows) - 5} node rows, the feature manifest counted {len(rows)}"):
        graph_building.run(args)


def test_missing_feature_manifest_is_an_error(tmp_path: Path) -> None:
    features = tmp_path / "features"
    write_synthetic_nodes(features, SPLITS, nodes_per_session=80, feature_dims=DIMS, seed=1)
    graph_dir = graph_building.run(graph_args(features, tmp_path / "graphs"))
    record = graph_data.read_build_record(graph_dir)
    (features / "manifest.json").unlink()
    with pytest.raises(util.DataError, match="feature manifest missing"):
        graph_data.check_manifest(graph_dir, features, record)
    with pytest.raises(util.DataError, match="file not found"):
        graph_building.run([*graph_args(features, tmp_path / "g2")])


# --------------------------------------------------------------------------- two-fold CV end to end


UNUSABLE_SESSION = 5  # annotated, but its one segment has neither wav nor EDA/TEMP rows: the frames stage drops it


def add_unusable_session(root: Path) -> None:
    """An annotation file for one more session whose only segment has no wav and no bio rows."""
    lines = (root / "annotation" / "Sess01_eval.csv").read_text(encoding="utf-8").splitlines()
    row = lines[2].split(",")
    row[3] = f"Sess{UNUSABLE_SESSION:02d}_script01_User009F_001"
    (root / "annotation" / f"Sess{UNUSABLE_SESSION:02d}_eval.csv").write_text(
        "\n".join([*lines[:2], ",".join(row)]) + "\n", encoding="utf-8")


ABSENT = ("surprise", "fear")  # relabelled away in the second fold's test sessions (33, 37)


def relabel_away(root: Path, sessions: tuple[int, ...], classes: tuple[str, ...]) -> None:
    """Replace `classes` by neutral in the total evaluation (the label) of every segment of `sessions`."""
    for session in sessions:
        path = root / "annotation" / f"Sess{session:02d}_eval.csv"
        lines = path.read_text(encoding="utf-8").splitlines()
        for i in range(2, len(lines)):
            row = lines[i].split(",")
            labels = ["neutral" if label in classes else label for label in row[4].split(";")]
            row[4] = ";".join(dict.fromkeys(labels))
            lines[i] = ",".join(row)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def cv_run(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A two-fold CV of a tiny-preset copy with one annotated session that has no usable segment (and the
    preset's TEMP-only session 41) and two classes absent from the second fold's test sessions, run once
    with all modalities; `run(*flags)` runs it again."""
    work = tmp_path_factory.mktemp("cv")
    data = work / "KEMDy20"
    shutil.copytree(tiny_raw, data)
    add_unusable_session(data)
    relabel_away(data, (33, 37), ABSENT)
    with cv_runner(data, work) as run:
        yield {"work": work, "data": data, "cv_dir": work / "results" / "KEMDy20_cv2", "out": run(), "run": run}


@contextlib.contextmanager
def cv_runner(data: Path, work: Path) -> Iterator[Callable[..., str]]:
    """`run(*flags)`: run_pipeline.py --cv 2 on `data` into `work` with the tiny settings, in this
    process; returns what it printed."""
    argv = ["run_pipeline.py", "--data", str(data), "--profile", "demo", "--cv", "2", "--work", str(work)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "DEMO", TINY_SETTINGS)
        patch.setitem(config.STE_forward_params, "num_workers", 0)
        patch.setitem(config.STE_forward_params, "progress", False)

        def run(*flags: str) -> str:
            patch.setattr(sys, "argv", [*argv, *flags])
            with contextlib.redirect_stdout(io.StringIO()) as out:
                run_pipeline.main()
            return out.getvalue()

        yield run


def test_two_fold_cv_end_to_end(cv_run: dict) -> None:
    out = cv_run["out"].strip().splitlines()
    cv_dir = cv_run["cv_dir"]
    assert out[-1] == str(cv_dir / "summary_prosody-audio-eda-temp.json")
    summary = util.read_json(cv_dir / "summary_prosody-audio-eda-temp.json")
    # the CV folder records what it was run with: resolved settings and the environment
    recorded = util.read_json(cv_dir / layout.SETTINGS_FILE)
    assert recorded["name"] == "" and recorded["command"][:3] == ["run_pipeline.py", "--data", str(cv_run["data"])]
    assert recorded["STE_inputs"]["participant_norm"] is config.STE_inputs["participant_norm"]
    assert recorded["GNN"]["num_epoch"] == config.DEMO["GNN"]["num_epoch"]  # the profile's value, not config.GNN's
    assert recorded["GRAPH"]["numv"] == config.DEMO["GRAPH"]["numv"]
    assert {"commit", "python", "packages", "torch_threads"} <= set(recorded["environment"])
    assert summary["modalities"] == config.MODALITIES == "prosody,audio,eda,temp"
    # folds over the sessions with a usable segment only; session 5 (segment dropped) and 41 (TEMP only) in none
    assert f"sessions without a usable segment, in no fold: [{UNUSABLE_SESSION}, 41]" in out
    expected = [{"train": [33], "val": [37], "test": [1, 2]}, {"train": [1], "val": [2], "test": [33, 37]}]
    for k, (fold, splits) in enumerate(zip(summary["folds"], expected, strict=True)):
        assert {name: fold[f"{name}_sessions"] for name in splits} == splits
        assert util.read_json(cv_dir / f"fold_{k}" / "splits.json") == splits  # recorded in the fold's folder
        assert f"fold {k}/2: train {splits['train']} (1), val {splits['val']} (1), test {splits['test']} (2)" in out
        assert fold["tested_sessions"] == splits["test"]
        # a trained fold encoder keeps best.pth only: the epoch checkpoints (weights and optimizer) are for resuming
        assert [p.name for p in (cv_dir / f"fold_{k}" / "encoder").glob("*.pth")] == ["best.pth"]
        # and best.pth without the optimizer, scheduler and scaler state that only resuming reads
        state = checkpoints.load_encoder_checkpoint(cv_dir / f"fold_{k}" / "encoder" / "best.pth")
        assert not set(checkpoints.TRAINING_STATE) & set(state) and {"model", "normalization", "best"} <= set(state)
    # a fold whose test sessions lack some classes goes through (macro-F1 over the classes present)
    assert not set(ABSENT) & set(summary["folds"][1]["classes_present"])
    assert set(ABSENT) <= set(summary["folds"][0]["classes_present"])
    assert summary["tested_sessions"] == [1, 2, 33, 37]
    assert summary["not_tested_sessions"] == [UNUSABLE_SESSION, 41]
    n_segments = sum(f["n_segments"] for f in summary["folds"])
    assert summary["bootstrap"]["n_sessions"] == 4 and summary["bootstrap"]["n_segments"] == n_segments
    assert (f"pooled figures cover 4 sessions and {n_segments} segments (modalities prosody,audio,eda,temp); not "
            f"tested, no usable segment: sessions [{UNUSABLE_SESSION}, 41]") in out
    assert summary["systems"] == ["majority", "encoder", "temporal", "classical", "fusion", "gnn"]
    assert summary["notes"] == []
    for fold in summary["folds"]:
        for name in summary["systems"]:
            assert set(fold["segment"][name]) >= {"accuracy", "macro_f1", "weighted_f1"}
    pooled = summary["pooled"]
    # four tested sessions, fewer than metrics.MIN_SESSIONS_FOR_INTERVAL: no interval, null in the JSON
    for name in (*summary["systems"], "gnn_minus_encoder", "gnn_minus_temporal", "gnn_minus_classical"):
        assert pooled[name]["ci95"] is None
    assert '"ci95": null' in (cv_dir / "summary_prosody-audio-eda-temp.json").read_text(encoding="utf-8")
    for name in summary["systems"]:
        assert pooled[name]["n_segments"] == n_segments and pooled[name]["n_sessions"] == 4
        assert any(line.startswith(f"{name} ") and line.endswith(f"{pooled[name]['macro_f1']:.4f} [n/a (4 sessions)]")
                   for line in out)
    for other in ("encoder", "temporal"):
        assert pooled[f"gnn_minus_{other}"]["macro_f1"] == pytest.approx(
            pooled["gnn"]["macro_f1"] - pooled[other]["macro_f1"])
        assert any(line.startswith(f"GNN − {other} (pooled, paired)") for line in out)
    assert (cv_dir / "summary_prosody-audio-eda-temp.png").is_file()
    assert (cv_dir / "confusion_pooled_prosody-audio-eda-temp.png").is_file()
    # each fold's encoder was fitted on that fold's training sessions, recorded in its manifest
    for k, fold in enumerate(summary["folds"]):
        manifest = util.read_json(cv_dir / f"fold_{k}" / "features" / "manifest.json")
        assert manifest["encoder_splits"]["train"] == fold["train_sessions"]
        assert {s for roles in manifest["embedded_by"].values() for s in roles} == {
            f"Sess{s:02d}" for s in fold["train_sessions"] + fold["val_sessions"] + fold["test_sessions"]}
    states = [util.read_json(cv_dir / f"fold_{k}" / "pipeline_state.json") for k in range(2)]
    assert states[0]["STE_train"] != states[1]["STE_train"]  # stage keys include the splits and the fold


def test_cv_resumes_at_the_missing_stage(cv_run: dict) -> None:
    # a second run skips every stage; a fold whose GNN results vanished reruns that stage only
    summary = util.read_json(cv_run["cv_dir"] / "summary_prosody-audio-eda-temp.json")
    shutil.rmtree(cv_run["cv_dir"] / "fold_1" / "gnn_prosody-audio-eda-temp")
    out = cv_run["run"]()
    assert "[fold 1 train_val prosody-audio-eda-temp] running" in out
    assert out.count("] running") == 1
    assert util.read_json(cv_run["cv_dir"] / "summary_prosody-audio-eda-temp.json")["folds"] == summary["folds"]


def test_cv_ablation_reuses_each_folds_encoder_features_and_graphs(cv_run: dict) -> None:
    cv_dir = cv_run["cv_dir"]
    out = cv_run["run"]("--modalities", "audio")
    for k in range(2):
        for stage in ("STE_train", "STE_forward", "generate_graph"):
            assert f"[fold {k} {stage}] up to date, skipped" in out
        assert f"[fold {k} train_val audio] running" in out
    assert out.count("] running") == 2
    assert out.strip().splitlines()[-1] == str(cv_dir / "summary_audio.json")
    audio = util.read_json(cv_dir / "summary_audio.json")
    assert audio["modalities"] == "audio"
    assert [f["test_sessions"] for f in audio["folds"]] == [[1, 2], [33, 37]]
    for k in range(2):
        assert util.read_json(cv_dir / f"fold_{k}" / "gnn_audio" / "metrics.json")["args"]["modalities"] == "audio"
    # the all-modality GNNs are still there and still up to date: switching back trains nothing
    out = cv_run["run"]()
    assert out.count("] running") == 0
    assert out.strip().splitlines()[-1] == str(cv_dir / "summary_prosody-audio-eda-temp.json")


def test_encoder_heads_scores_every_head_and_the_fused_one_as_the_run(cv_run: dict, tmp_path: Path) -> None:
    """benchmarks/encoder_heads.py over the CV run's fold encoders: a pooled and per-fold figure for every head, the
    fused head's pooled figure the run's own `encoder` row, and a fold whose recorded decisions differ refused."""
    heads = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "encoder_heads.py")
    cv_dir = cv_run["cv_dir"]
    report = heads.score_run(cv_dir, cv_run["data"], with_train=False)
    summary = util.read_json(cv_dir / "summary_prosody-audio-eda-temp.json")
    assert list(report) == ["test"] and list(report["test"]) == ["audio", "eda", "temp", "fused"]
    encoder = summary["pooled"]["encoder"]
    assert report["test"]["fused"]["pooled"] == pytest.approx(encoder["macro_f1"], abs=1e-12)
    assert all(row["segments"] == encoder["n_segments"] and len(row["folds"]) == 2 for row in report["test"].values())
    copy = tmp_path / "run"
    shutil.copytree(cv_dir / "fold_0", copy / "fold_0")
    path = copy / "fold_0" / "features" / "encoder_predictions_test.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    row = lines[1].split(",")
    row[2] = next(e for e in config.EMOTIONS if e != row[2])  # one test decision the fused head did not make
    path.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(util.DataError, match="decides 1 of"):
        heads.score_run(copy, cv_run["data"], with_train=False)
