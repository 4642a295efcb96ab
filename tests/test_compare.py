"""cv_results.compare_runs: run B minus run A over the same folds, paired on the same test segments,
on hand-made fold folders whose differences are worked out by hand; runs over other folds are refused."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from script_module import load_script
from test_cv import write_fold

from encoder.core import config, layout, metrics, util
from temporal_gnn import cv_results

cv_results_script = load_script(config.REPO_ROOT / "cv_results.py")  # the --compare command
GNN = layout.gnn_folder("audio")
HALVES = [[1, 2], [3, 4]]  # fold k tests HALVES[k] and trains on the other half
# four sessions of two segments, one of class 0 (neutral) and one of class 1 (happy) each
SESSIONS = np.repeat([1, 2, 3, 4], 2)
TARGETS = np.tile([0, 1], 4)
WRONG = TARGETS.copy()
WRONG[[0, 3]] = 1 - WRONG[[0, 3]]  # wrong on session 1's neutral and session 2's happy segment


def write_run(cv_dir: Path, gnn: np.ndarray, encoder: np.ndarray = TARGETS, temporal: np.ndarray | None = None,
              reverse: bool = False) -> Path:
    """A two-fold CV folder as run_pipeline writes it (test_cv.write_fold), with the temporal baseline's
    predictions when given and, with `reverse`, every predictions file's rows in reverse order."""
    data = {"sessions": SESSIONS, "targets": TARGETS, "gnn": gnn, "encoder": encoder}
    for k in range(2):
        fold = cv_dir / f"fold_{k}"
        write_fold(fold, data, HALVES[k], HALVES[1 - k], GNN)
        files = [fold / GNN / "predictions_test.csv", fold / "features" / "encoder_predictions_test.csv"]
        if temporal is not None:
            mine = np.isin(SESSIONS, HALVES[k])
            segments = metrics.read_segment_predictions(files[0])["segment_ids"]
            files.append(fold / GNN / "predictions_test_temporal.csv")
            probs = np.full((mine.sum(), config.NUM_CLASSES), 1 / config.NUM_CLASSES)
            metrics.write_segment_predictions(segments, TARGETS[mine], temporal[mine], probs, files[-1])
        if reverse:
            for path in files:
                pd.read_csv(path, dtype=str).iloc[::-1].to_csv(path, index=False)
    return cv_dir


@pytest.fixture
def intervals_from_two_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-worked intervals below are over four sessions, fewer than metrics.MIN_SESSIONS_FOR_INTERVAL."""
    monkeypatch.setattr(metrics, "MIN_SESSIONS_FOR_INTERVAL", 2)


def test_four_sessions_get_no_interval(tmp_path: Path) -> None:
    a, b = write_run(tmp_path / "a", WRONG), write_run(tmp_path / "b", TARGETS)
    comparison = cv_results.compare_runs(a, b, "audio", n_boot=200, seed=0)
    gnn = comparison["rows"]["gnn"]
    assert gnn["a"]["ci95"] is gnn["b"]["ci95"] is gnn["b_minus_a"]["ci95"] is None
    assert gnn["b_minus_a"]["macro_f1"] == pytest.approx(0.25)
    assert comparison["bootstrap"]["min_sessions"] == 8 and comparison["bootstrap"]["n_sessions"] == 4
    lines = cv_results.format_comparison(comparison).splitlines()
    assert any(line.startswith("gnn ") and "0.7500 [n/a (4 sessions)]" in line and "+0.2500 [n/a (4 sessions)]" in line
               for line in lines)


@pytest.mark.usefixtures("intervals_from_two_sessions")
def test_identical_runs_differ_by_zero(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", WRONG, temporal=WRONG)
    b = write_run(tmp_path / "b", WRONG, temporal=WRONG, reverse=True)  # the same predictions, rows reordered
    comparison = cv_results.compare_runs(a, b, "audio", n_boot=500, seed=0)
    assert comparison["systems"] == ["encoder", "temporal", "gnn"]
    assert comparison["notes"] == ["classical: not in every fold of both runs, left out",  # write_run has none
                                   "fusion: not in every fold of both runs, left out"]
    summary = cv_results.summarise(layout.fold_dirs(a), "audio", seed=0, n_boot=500)
    for name, row in comparison["rows"].items():
        assert row["b_minus_a"] == {"macro_f1": 0.0, "ci95": [0.0, 0.0], "paired": True}
        assert row["a"] == row["b"] == {k: summary["pooled"][name][k] for k in ("macro_f1", "ci95")}
    assert comparison["bootstrap"]["n_sessions"] == 4 and comparison["bootstrap"]["n_segments"] == 8


@pytest.mark.usefixtures("intervals_from_two_sessions")
def test_b_right_where_a_is_wrong(tmp_path: Path) -> None:
    # A's GNN: per class 3 of 4 right, 1 false positive -> F1 = 2·3 / (2·3 + 1 + 1) = 0.75 for both classes;
    # B's GNN is right everywhere (1.0): B − A = +0.25. Every resample gives B − A >= 0; one that draws only
    # sessions 3 and 4 (where A is right too) gives 0, with chance (2/4)^4 = 1/16 > 2.5%, so the interval
    # starts at 0; the largest value, session 1 (or 2) drawn four times, is 1 − (0 + 2/3) / 2 = 2/3.
    # The encoders are the same in both runs (0 [0, 0]); A alone has a temporal baseline (left out).
    a = write_run(tmp_path / "a", WRONG, temporal=TARGETS)
    b = write_run(tmp_path / "b", TARGETS)
    comparison = cv_results.compare_runs(a, b, "audio", n_boot=1000, seed=0)
    assert comparison["systems"] == ["encoder", "gnn"]
    assert comparison["notes"] == ["temporal: not in every fold of both runs, left out",
                                   "classical: not in every fold of both runs, left out",
                                   "fusion: not in every fold of both runs, left out"]
    gnn = comparison["rows"]["gnn"]
    assert gnn["a"]["macro_f1"] == pytest.approx(0.75) and gnn["b"] == {"macro_f1": 1.0, "ci95": [1.0, 1.0]}
    assert gnn["b_minus_a"]["macro_f1"] == pytest.approx(0.25)
    assert gnn["b_minus_a"]["ci95"][0] == 0.0 and 0.25 < gnn["b_minus_a"]["ci95"][1] <= 2 / 3 + 1e-12
    assert comparison["rows"]["encoder"]["b_minus_a"] == {"macro_f1": 0.0, "ci95": [0.0, 0.0], "paired": True}
    # B − A is −(A − B): the same resamples, the interval mirrored
    reverse = cv_results.compare_runs(b, a, "audio", n_boot=1000, seed=0)["rows"]["gnn"]["b_minus_a"]
    assert reverse["macro_f1"] == pytest.approx(-0.25)
    assert reverse["ci95"] == pytest.approx([-gnn["b_minus_a"]["ci95"][1], -gnn["b_minus_a"]["ci95"][0]])


@pytest.mark.usefixtures("intervals_from_two_sessions")
def test_cli_prints_the_table_and_writes_into_b(tmp_path: Path) -> None:
    a, b = write_run(tmp_path / "a", WRONG), write_run(tmp_path / "b", TARGETS)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        cv_results_script.main(["--compare", str(a), str(b), "--modalities", "audio"])
    lines = out.getvalue().strip().splitlines()
    assert lines[-1] == str(b / "compare_audio.json")
    written = util.read_json(b / "compare_audio.json")
    assert written["a"] == str(a) and written["b"] == str(b) and written["rows"]["gnn"]["b_minus_a"]["macro_f1"] == 0.25
    assert lines[1:3] == [f"A: {a}", f"B: {b}"]
    assert any(line.startswith("gnn ") and "0.7500 [" in line and "1.0000 [1.0000, 1.0000]" in line
               and "+0.2500 [+0.0000, " in line for line in lines)


def test_runs_over_other_folds_are_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", WRONG)
    other_splits = write_run(tmp_path / "b", TARGETS)
    splits = util.read_json(other_splits / "fold_1" / "splits.json")
    util.write_json({**splits, "train": splits["val"], "val": splits["train"]}, other_splits / "fold_1" / "splits.json")
    with pytest.raises(util.DataError, match="fold 1's splits.json differ") as err:
        cv_results.compare_runs(a, other_splits, "audio")
    assert str(a) in str(err.value) and str(other_splits) in str(err.value) and "\n" not in str(err.value)

    other_segments = write_run(tmp_path / "c", TARGETS)
    for path in (other_segments / "fold_0" / GNN / "predictions_test.csv",
                 other_segments / "fold_0" / "features" / "encoder_predictions_test.csv"):
        pd.read_csv(path, dtype=str).iloc[:-1].to_csv(path, index=False)  # one test segment fewer
    with pytest.raises(util.DataError, match="fold 0's test segment IDs differ") as err:
        cv_results.compare_runs(a, other_segments, "audio")
    assert str(a) in str(err.value) and str(other_segments) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.usefixtures("intervals_from_two_sessions")
def test_over_seeds_averages_the_seeds_paired_differences_on_the_same_resamples(tmp_path: Path) -> None:
    # first seed: A wrong where B is right, B − A = +0.25 (test_b_right_where_a_is_wrong); seed 1: A and B
    # both right, 0 in every resample. Each resample draws the same sessions for both seeds, so the
    # over-seeds difference is half the first seed's in every resample: its interval is the first seed's halved.
    a, b = write_run(tmp_path / "a", WRONG), write_run(tmp_path / "b", TARGETS)
    write_run(a / "seed_1", TARGETS, reverse=True)  # another row order: aligned by segment ID
    write_run(b / "seed_1", TARGETS)
    write_run(b / "seed_2", TARGETS)  # B alone has seed 2: left out
    comparison = cv_results.compare_seeds(a, b, "audio", n_boot=1000, seed=0)
    assert comparison["seeds"] == ["first", "seed_1"] and comparison["systems"] == ["encoder", "gnn"]
    first = comparison["per_seed"][0]["rows"]["gnn"]["b_minus_a"]
    gnn = comparison["over_seeds"]["gnn"]
    assert gnn["per_seed"] == pytest.approx([0.25, 0.0]) and gnn["macro_f1"] == pytest.approx(0.125)
    assert gnn["sd"] == pytest.approx(0.25 / np.sqrt(2))
    assert gnn["ci95"] == pytest.approx([first["ci95"][0] / 2, first["ci95"][1] / 2])
    assert comparison["over_seeds"]["encoder"]["macro_f1"] == 0.0
    assert comparison["over_seeds"]["encoder"]["ci95"] == [0.0, 0.0]

    with contextlib.redirect_stdout(io.StringIO()) as out:
        cv_results_script.main(["--compare", str(a), str(b), "--modalities", "audio"])
    lines = out.getvalue().strip().splitlines()
    assert lines[-1] == str(b / "compare_audio_seeds.json")
    assert util.read_json(b / "compare_audio_seeds.json")["over_seeds"]["gnn"]["macro_f1"] == pytest.approx(0.125)
    assert "B − A over 2 seeds (first, seed_1), pooled segment macro-F1, paired" in lines
    assert any(line.startswith("gnn ") and "+0.2500  +0.0000" in line and "+0.1250 [" in line for line in lines)


def test_a_comparison_over_seeds_needs_two_shared_seeds(tmp_path: Path) -> None:
    a, b = write_run(tmp_path / "a", WRONG), write_run(tmp_path / "b", TARGETS)
    write_run(b / "seed_1", TARGETS)
    with pytest.raises(util.DataError, match="1 seed shared") as err:
        cv_results.compare_seeds(a, b, "audio")
    assert "\n" not in str(err.value)
    with contextlib.redirect_stdout(io.StringIO()) as out:  # the CLI compares the one shared seed
        cv_results_script.main(["--compare", str(a), str(b), "--modalities", "audio"])
    assert out.getvalue().strip().splitlines()[-1] == str(b / "compare_audio.json")


@pytest.mark.usefixtures("intervals_from_two_sessions")
def test_suffix_b_compares_two_gnns_trained_in_the_same_folds(tmp_path: Path) -> None:
    # the folds of one run hold the GNN on the default graphs (wrong as WRONG) and one on other graphs
    # (folder suffix _ciy, right everywhere) beside the same encoder: +0.25 for the GNN, 0 for the encoder
    run = write_run(tmp_path / "run", WRONG)
    data = {"sessions": SESSIONS, "targets": TARGETS, "gnn": TARGETS, "encoder": TARGETS}
    for k in range(2):
        write_fold(run / f"fold_{k}", data, HALVES[k], HALVES[1 - k], GNN + "_ciy")
    comparison = cv_results.compare_runs(run, run, "audio", n_boot=500, seed=0, suffix_b="_ciy")
    assert comparison["rows"]["gnn"]["b_minus_a"]["macro_f1"] == pytest.approx(0.25)
    assert comparison["rows"]["encoder"]["b_minus_a"] == {"macro_f1": 0.0, "ci95": [0.0, 0.0], "paired": True}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        cv_results_script.main(["--compare", str(run), str(run), "--modalities", "audio", "--suffix_b", "_ciy"])
    lines = out.getvalue().strip().splitlines()
    assert lines[-1] == str(run / "compare_audio_ciy.json")
    assert lines[2] == f"B: {run} (GNN folders gnn_audio_ciy)"


@pytest.mark.usefixtures("intervals_from_two_sessions")
def test_seed_differences_average_each_seeds_gnn_minus_encoder_on_the_same_resamples(tmp_path: Path) -> None:
    # seed 0: GNN right everywhere, encoder as WRONG (+0.25); seed 1: both right (0). The same sessions in
    # every resample for both seeds: the mean over seeds is half of seed 0's difference in every resample.
    first = write_run(tmp_path / "s0", TARGETS, encoder=WRONG, temporal=TARGETS)
    second = write_run(tmp_path / "s1", TARGETS, encoder=TARGETS, temporal=WRONG, reverse=True)
    trees = [layout.fold_dirs(first), layout.fold_dirs(second)]
    over = cv_results.seed_differences(trees, "audio", ["", ""], n_boot=1000, seed=0)
    alone = cv_results.summarise(trees[0], "audio", seed=0, n_boot=1000)["pooled"]["gnn_minus_encoder"]
    assert over["gnn_minus_encoder"]["macro_f1"] == pytest.approx(0.125)
    assert over["gnn_minus_encoder"]["ci95"] == pytest.approx([alone["ci95"][0] / 2, alone["ci95"][1] / 2])
    assert over["gnn_minus_temporal"]["macro_f1"] == pytest.approx(0.125)  # 0 on seed 0, +0.25 on seed 1
    per_seed = [cv_results.summarise(t, "audio", seed=0, n_boot=1000) | {"modalities": "audio"} for t in trees]
    summary = cv_results.seeds_summary(per_seed, [0, 1], keep_encoder=False, over_seeds=over)
    assert summary["macro_f1"]["gnn_minus_encoder"]["per_seed"] == pytest.approx([0.25, 0.0])
    text = cv_results.format_seeds(summary)
    assert "gnn − encoder, mean over seeds [95% CI, the same sessions resampled for every seed]: +0.1250 [" in text


@pytest.mark.usefixtures("intervals_from_two_sessions")
def test_two_modality_sets_of_one_run_compared_with_modalities_b(tmp_path: Path) -> None:
    # the GNN on "audio" is wrong on two segments (A); the GNN on "prosody,audio" in the same folds is right (B)
    run = write_run(tmp_path / "run", WRONG)
    other = layout.gnn_folder("prosody,audio")
    for k in range(2):
        write_fold(run / f"fold_{k}", {"sessions": SESSIONS, "targets": TARGETS, "gnn": TARGETS, "encoder": TARGETS},
                   HALVES[k], HALVES[1 - k], other)
    comparison = cv_results.compare_runs(run, run, "audio", n_boot=500, seed=0, modalities_b="prosody,audio")
    assert comparison["modalities_b"] == "prosody,audio"
    assert comparison["rows"]["gnn"]["b_minus_a"]["macro_f1"] == pytest.approx(0.25)  # 1.0 − 0.75, as above
    assert comparison["rows"]["encoder"]["b_minus_a"]["macro_f1"] == 0.0
    assert f"B: {run} (GNN folders {other})" in cv_results.format_comparison(comparison)
    assert cv_results.write_comparison(comparison) == run / "compare_prosody-audio.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cv_results_script.main(["--compare", str(run), str(run), "--modalities", "audio", "--modalities_b",
                                "prosody,audio"])
    assert printed.getvalue().strip().splitlines()[-1] == str(run / "compare_prosody-audio.json")
