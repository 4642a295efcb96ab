"""temporal_gnn/balanced_decision.py (benchmarks/balanced_decision.py) on a two-fold CV tree written by hand: the
balanced decision argmax(log p - log prior) against the plain argmax, with the figures worked out below."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from encoder.core import config, extraction, layout, metrics, util
from temporal_gnn import balanced_decision

NEUTRAL, HAPPY = 0, 1
GNN = layout.gnn_folder(config.MODALITIES)
PRIOR = [0.7, 0.1, 0.04, 0.04, 0.04, 0.04, 0.04]  # the folds' recorded training prior

# Per fold: two segments (neutral, then happy) and the GNN's probabilities of neutral and happy (the encoder's are
# the same). Balanced scores are log p - log prior: log(0.75/0.7) = 0.07 < log(0.25/0.1) = 0.92 turns fold 0's happy
# segment to happy; log(0.9/0.7) = 0.25 > log(0.1/0.1) = 0 and log(0.95/0.7) = 0.31 > log(0.05/0.1) = -0.69 keep
# the neutral ones neutral. So plain (n, n | n, h) and balanced (n, h | n, h).
FOLDS = {0: [(0.9, 0.1), (0.75, 0.25)], 1: [(0.95, 0.05), (0.3, 0.7)]}


def write_tree(root: Path) -> Path:
    for k, pairs in FOLDS.items():
        session = k + 1
        ids = [f"Sess{session:02d}_script01_User{2 * session - 1:03d}F_{i:03d}" for i in (1, 2)]
        folder = layout.fold_dir(root, k)
        probs = np.zeros((2, config.NUM_CLASSES))
        probs[:, :2] = pairs
        for path in (folder / "features" / extraction.PREDICTIONS_FILE, folder / GNN / "predictions_test.csv"):
            path.parent.mkdir(parents=True, exist_ok=True)
            metrics.write_segment_predictions(ids, [NEUTRAL, HAPPY], probs.argmax(axis=1), probs, path)
        util.write_json({"decision": {"tau": 0.0, "grid": [0.0], "prior": PRIOR},
                         "graphs": {"dir": str(folder / "graphs" / "unused")}}, folder / GNN / "metrics.json")
    return root


def test_the_balanced_decision_is_scored_against_the_plain_argmax_on_the_figures_worked_out(tmp_path: Path) -> None:
    run = write_tree(tmp_path / "run")
    shutil.copytree(run / "fold_0", run / "seed_1" / "fold_0")
    shutil.copytree(run / "fold_1", run / "seed_1" / "fold_1")
    result = balanced_decision.balanced_decision(run, tau=1.0, n_boot=10)
    assert result["systems"] == ["encoder", "gnn"]  # no fold has the GRU's predictions: it is left out
    assert list(result["seeds"]) == ["first", "seed_1"]
    gnn = result["seeds"]["first"]["gnn"]
    # truth (n, h, n, h); plain (n, n, n, h): F1 neutral 4/5, happy 2/3; balanced: every segment right
    assert gnn["plain"]["macro_f1"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert gnn["balanced"]["macro_f1"] == pytest.approx(1.0)
    assert gnn["difference"]["macro_f1"] == pytest.approx(1 - (4 / 5 + 2 / 3) / 2)
    assert gnn["difference"]["ci95"] is None  # two sessions: below the fewest for an interval
    assert result["balanced_minus_plain_over_seeds"]["encoder"]["macro_f1"] == pytest.approx(1 - (4 / 5 + 2 / 3) / 2)
    text = balanced_decision.format_balanced(result)
    assert "+0.2667 [n/a (2 sessions)]" in text and "mean over 2 seeds" in text


def test_half_the_adjustment_leaves_the_segment_that_the_full_one_turns(tmp_path: Path) -> None:
    """tau 0.5: fold 0's happy segment scores log 0.75 - 0.5 log 0.7 = -0.11 for neutral against
    log 0.25 - 0.5 log 0.1 = -0.24 for happy, so it stays neutral and the decisions are the plain ones."""
    result = balanced_decision.balanced_decision(write_tree(tmp_path / "run"), tau=0.5, n_boot=10)
    gnn = result["seeds"]["first"]["gnn"]
    assert gnn["balanced"]["macro_f1"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert gnn["difference"]["macro_f1"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="tau must be above 0"):
        balanced_decision.balanced_decision(tmp_path / "run", tau=0.0)


def test_a_fold_without_a_recorded_prior_takes_that_of_its_training_graphs_segments(tmp_path: Path) -> None:
    """Runs from before the recorded decision: the prior is the training graphs' segment frequencies, add-one
    smoothed. Two graphs, segments a (neutral, two nodes), b (happy), c (neutral): counts 2, 1 -> (3, 2, 1, ...)/10."""
    import torch
    from torch_geometric.data import Data

    from temporal_gnn import graph_data

    folder = tmp_path / "fold_0"
    processed = folder / "graphs" / "features_250_7.2_cin" / "train" / "processed"
    nodes = [(["a", "a", "b"], [NEUTRAL, NEUTRAL, HAPPY]), (["c"], [NEUTRAL])]
    for k, (ids, targets) in enumerate(nodes):
        graph = Data(x=torch.zeros(len(ids), 2), edge_index=torch.zeros(2, 0, dtype=torch.long),
                     target=torch.tensor(targets), segment_id=ids)
        graph_data.save_graph(graph, processed / f"graph_{k:03d}.pt")
    util.write_json({"graphs": {"dir": "/elsewhere/features_250_7.2_cin"}}, folder / GNN / "metrics.json")
    prior = balanced_decision.training_prior(folder, GNN)
    assert prior == pytest.approx(np.array([3, 2, 1, 1, 1, 1, 1]) / 10)


def test_the_script_prints_the_table_and_writes_the_json_that_render_results_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import runpy

    out = tmp_path / "decision.json"
    monkeypatch.setattr("sys.argv", ["balanced_decision.py", str(write_tree(tmp_path / "run")), "--out", str(out)])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "balanced_decision.py"),
                       run_name="__main__")
    assert exited.value.code == 0
    gnn_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("first       gnn"))
    assert gnn_row.split()[2::4] == ["0.7333", "1.0000", "+0.2667"]
    assert util.read_json(out)["seeds"]["first"]["gnn"]["balanced"]["macro_f1"] == pytest.approx(1.0)


def test_two_systems_of_a_run_kept_encoder_seeds_are_paired_under_either_decision(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The classical system right on every segment beside the tree above: the GNN − classical is 0.7333 − 1 with the
    plain argmax and 1 − 1 with the balanced one, on the first seed and on a second seed's GNN folder
    (`gnn_<modalities>_seed1`, a --keep_encoder run) that repeats it; so the means over the seeds are the same."""
    from benchmarks.system_differences import main

    run = write_tree(tmp_path / "run")
    for k in FOLDS:
        folder = layout.fold_dir(run, k)
        gnn_metrics = util.read_json(folder / GNN / "metrics.json")
        util.write_json(gnn_metrics | {"baselines": {"majority": {"class": "neutral"}}}, folder / GNN / "metrics.json")
        ids = metrics.read_segment_predictions(folder / GNN / "predictions_test.csv")["segment_ids"]
        right = np.zeros((2, config.NUM_CLASSES))
        right[[0, 1], [NEUTRAL, HAPPY]] = 1.0
        metrics.write_segment_predictions(ids, [NEUTRAL, HAPPY], [NEUTRAL, HAPPY], right,
                                          folder / GNN / "predictions_test_classical.csv")
        shutil.copytree(folder / GNN, folder / f"{GNN}_seed1")
    plain = balanced_decision.system_differences(run, [("gnn", "classical")], n_boot=10)
    assert plain["seeds"] == ["first", "seed_1"]
    assert plain["macro_f1"]["gnn"] == pytest.approx([(4 / 5 + 2 / 3) / 2] * 2)
    assert plain["macro_f1"]["classical"] == [1.0, 1.0]
    assert plain["macro_f1"]["majority"] == pytest.approx([(2 / 3) / 2] * 2)  # all neutral: F1 2/3 and 0
    row = plain["differences"]["gnn_minus_classical"]
    assert row["per_seed"] == pytest.approx([(4 / 5 + 2 / 3) / 2 - 1] * 2)
    assert row["macro_f1"] == pytest.approx((4 / 5 + 2 / 3) / 2 - 1)
    balanced = balanced_decision.system_differences(run, [("gnn", "classical")], tau=1.0, n_boot=10)
    assert balanced["differences"]["gnn_minus_classical"]["macro_f1"] == pytest.approx(0.0)
    with pytest.raises(util.DataError, match="no predictions of temporal on every seed"):
        balanced_decision.system_differences(run, [("temporal", "classical")])
    main([str(run), "--pair", "gnn", "classical", "--tau", "1"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("GNN − classical"))
    assert row.split()[3:6] == ["+0.0000", "+0.0000", "+0.0000"]
