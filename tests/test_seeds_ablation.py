"""run_pipeline.py --seeds, --keep_encoder, --cv --ablation and --class_weight on a two-fold CV of the
tiny preset: seeds give different runs and a mean ± sd that a hand computation from the prediction CSVs
reproduces, the ablation table has every non-empty modality subset with figures recomputed from the
prediction CSVs, the four tested sessions get no interval, and cached stages stay cached per seed and
per class weighting."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_cv import cv_runner

from encoder.core import config, util
from temporal_gnn import cv_results, pipeline_run

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = "prosody-audio-eda-temp"  # config.MODALITIES, the default


def test_modality_subsets_are_every_non_empty_subset() -> None:
    assert cv_results.modality_subsets("audio,eda,temp") == [
        "audio", "eda", "temp", "audio,eda", "audio,temp", "eda,temp", "audio,eda,temp"]
    assert len(cv_results.modality_subsets("audio,eda,temp,text")) == 2**4 - 1
    assert cv_results.modality_subsets("audio") == ["audio"]


@pytest.mark.parametrize("flags", [["--keep_encoder"], ["--seeds", "1", "--keep_encoder"], ["--ablation"],
                                   ["--seeds", "0"]])
def test_flags_that_cannot_work_are_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        pipeline_run.parse_args(flags)


@pytest.fixture(scope="module")
def seeded(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A two-fold CV of a tiny-preset copy with two seeds, each with its own encoders; `run(*flags)`
    runs run_pipeline.py --cv 2 again on the same folders."""
    work = tmp_path_factory.mktemp("seeds")
    data = work / "KEMDy20"
    shutil.copytree(tiny_raw, data)
    with cv_runner(data, work) as run:
        yield {"cv_dir": work / "results" / "KEMDy20_cv2", "out": run("--seeds", "2"), "run": run,
               "seeds": [config.SEED, config.SEED + 1]}


def system_table(fold_dir: Path, gnn: str, system: str) -> pd.DataFrame:
    """A fold's test segments with `system`'s prediction (columns target, prediction), read from the CSVs
    run_pipeline wrote, not from any summary."""
    if system == "majority":
        table = pd.read_csv(fold_dir / gnn / "predictions_test.csv")
        majority = util.read_json(fold_dir / gnn / "metrics.json")["baselines"]["majority"]["class"]
        return table.assign(prediction=majority)
    return pd.read_csv({"gnn": fold_dir / gnn / "predictions_test.csv",
                        "temporal": fold_dir / gnn / "predictions_test_temporal.csv",
                        "classical": fold_dir / gnn / "predictions_test_classical.csv",
                        "fusion": fold_dir / gnn / "predictions_test_fusion.csv",
                        "encoder": fold_dir / "features" / "encoder_predictions_test.csv"}[system])


def pooled_f1_by_hand(fold_dirs: list[Path], gnn: str, system: str) -> float:
    """Pooled segment macro-F1 over the classes of the pooled truth, with sklearn; `system` may be a
    paired difference `gnn_minus_<other>`."""
    from sklearn.metrics import f1_score

    if system.startswith("gnn_minus_"):
        return pooled_f1_by_hand(fold_dirs, gnn, "gnn") - pooled_f1_by_hand(fold_dirs, gnn, system[10:])
    table = pd.concat([system_table(d, gnn, system) for d in fold_dirs])
    return float(f1_score(table["target"], table["prediction"], labels=sorted(table["target"].unique()),
                          average="macro", zero_division=0))


def probabilities(path: Path) -> np.ndarray:
    table = pd.read_csv(path)
    return table[[c for c in table.columns if c.startswith("p_")]].to_numpy()


def test_seeds_give_different_runs_and_their_mean_and_sd(seeded: dict) -> None:
    cv_dir, (first, second) = seeded["cv_dir"], seeded["seeds"]
    out = seeded["out"].strip().splitlines()
    seeds_path = cv_dir / f"seeds_{ALL}.json"
    assert out[-1] == str(seeds_path)
    # the first seed keeps the one-seed layout; the second has a whole CV tree of its own under seed_S/
    trees = {first: cv_dir, second: cv_dir / f"seed_{second}"}
    for seed, tree in trees.items():
        for k in range(2):
            assert (tree / f"fold_{k}" / "encoder" / "best.pth").is_file()
            opt = util.read_json(tree / f"fold_{k}" / "encoder" / "ste_encoder_config.json")["optimization"]
            assert opt["seed"] == seed
            args = util.read_json(tree / f"fold_{k}" / f"gnn_{ALL}" / "metrics.json")["args"]
            assert args["seed"] == seed
    assert f"fold 0/2 seed {second}: train [33] (1), val [37] (1), test [1, 2] (2)" in out
    assert f"[fold 1 seed {second} train_val {ALL}] running" in out
    for k in range(2):
        gnn = [probabilities(trees[s] / f"fold_{k}" / f"gnn_{ALL}" / "predictions_test.csv") for s in trees]
        assert gnn[0].shape == gnn[1].shape and not np.allclose(gnn[0], gnn[1])  # different runs
    # mean and sample sd over seeds of each seed's pooled macro-F1, by hand from each seed's prediction CSVs
    summary = util.read_json(seeds_path)
    assert summary["seeds"] == [first, second] and summary["keep_encoder"] is False
    assert summary["systems"] == ["majority", "encoder", "temporal", "classical", "fusion", "gnn"]
    assert set(summary["macro_f1"]) == {*summary["systems"], "gnn_minus_encoder", "gnn_minus_temporal",
                                        "gnn_minus_classical", "gnn_minus_fusion"}
    differs = 0
    for name, row in summary["macro_f1"].items():
        a, b = (pooled_f1_by_hand([trees[s] / f"fold_{k}" for k in range(2)], f"gnn_{ALL}", name) for s in trees)
        differs += a != b
        assert row["per_seed"] == pytest.approx([a, b])
        assert row["mean"] == pytest.approx((a + b) / 2)
        assert row["sd"] == pytest.approx(abs(a - b) / np.sqrt(2))  # sample sd (ddof=1) of two values
        assert row["ci95_per_seed"] == [None, None]  # four tested sessions: no interval
    assert differs  # the sd check compares something other than zero with zero
    assert summary["n_sessions"] == 4
    assert [p["summary"] for p in summary["per_seed"]] == [str(trees[s] / f"summary_{ALL}.json") for s in trees]
    assert any("mean ± sd (ddof=1), seeds" in line for line in out)
    assert any(line.startswith("gnn − encoder ") and line.endswith("[n/a (4 sessions)]") for line in out)


def test_a_second_run_of_the_seeds_retrains_nothing(seeded: dict) -> None:
    out = seeded["run"]("--seeds", "2")
    assert out.count("] running") == 0
    assert out.count("up to date, skipped") == 1 + 2 * 2 * 4  # frames, then 4 stages per fold and seed


def test_keep_encoder_retrains_only_the_gnn(seeded: dict) -> None:
    cv_dir, second = seeded["cv_dir"], seeded["seeds"][1]
    out = seeded["run"]("--seeds", "2", "--keep_encoder")
    for k in range(2):
        for stage in ("STE_train", "STE_forward", "generate_graph", f"train_val {ALL}"):
            assert f"[fold {k} {stage}] up to date, skipped" in out  # the first seed's, reused
        assert f"[fold {k} train_val {ALL} seed {second}] running" in out
        metrics = util.read_json(cv_dir / f"fold_{k}" / f"gnn_{ALL}_seed{second}" / "metrics.json")
        assert metrics["args"]["seed"] == second
        assert metrics["args"]["features_dir"] == str(cv_dir / f"fold_{k}" / "features")
    assert out.count("] running") == 2
    assert out.strip().splitlines()[-1] == str(cv_dir / f"seeds_{ALL}_keep_encoder.json")
    summary = util.read_json(cv_dir / f"seeds_{ALL}_keep_encoder.json")
    assert summary["keep_encoder"] is True
    assert summary["macro_f1"]["encoder"]["sd"] == 0  # one encoder for both seeds
    assert summary["macro_f1"]["gnn"]["per_seed"][0] == util.read_json(
        cv_dir / f"summary_{ALL}.json")["pooled"]["gnn"]["macro_f1"]
    assert summary["macro_f1"]["gnn"]["per_seed"][1] == util.read_json(
        cv_dir / f"summary_{ALL}_seed{second}.json")["pooled"]["gnn"]["macro_f1"]


def test_cv_ablation_has_every_subset_with_figures_from_its_predictions(seeded: dict) -> None:
    cv_dir = seeded["cv_dir"]
    out = seeded["run"]("--ablation", "--modalities", "audio,eda")
    subsets = ["audio", "eda", "audio,eda"]
    for k in range(2):
        for stage in ("STE_train", "STE_forward", "generate_graph"):
            assert f"[fold {k} {stage}] up to date, skipped" in out
    assert out.count("] running") == 2 * len(subsets)
    assert out.strip().splitlines()[-1] == str(cv_dir / "ablation.json")
    ablation = util.read_json(cv_dir / "ablation.json")
    assert ablation["modalities"] == "audio,eda"
    assert [row["modalities"] for row in ablation["rows"]] == subsets
    # every figure recomputed from the subset's own prediction CSVs; the GNN on all (audio,eda) is the reference
    folds = [cv_dir / f"fold_{k}" for k in range(2)]
    full = pooled_f1_by_hand(folds, "gnn_audio-eda", "gnn")
    gnn = {}
    for row in ablation["rows"]:
        folder = f"gnn_{row['modalities'].replace(',', '-')}"
        gnn[row["modalities"]] = pooled_f1_by_hand(folds, folder, "gnn")
        assert row["gnn"] == {"macro_f1": pytest.approx(gnn[row["modalities"]]), "ci95": None}
        temporal = pooled_f1_by_hand(folds, folder, "temporal")
        assert row["temporal"] == {"macro_f1": pytest.approx(temporal), "ci95": None}
        classical = pooled_f1_by_hand(folds, folder, "classical")  # on the statistics of the subset's signals
        assert row["classical"] == {"macro_f1": pytest.approx(classical), "ci95": None}
        entry = util.read_json(folds[0] / folder / "metrics.json")["baselines"]["classical"]
        assert entry["groups"] == row["modalities"].split(",")
        assert row["gnn_minus_all"] == {"macro_f1": pytest.approx(gnn[row["modalities"]] - full), "ci95": None,
                                        "paired": True}
    # the subsets' GNNs are different models (their probabilities differ), so the rows are not copies of one
    # run; their macro-F1 may still tie when small models all predict the majority class
    for k in range(2):
        probs = [probabilities(folds[k] / f"gnn_{m.replace(',', '-')}" / "predictions_test.csv") for m in subsets]
        assert all(np.abs(a - b).max() > 1e-4 for i, a in enumerate(probs) for b in probs[i + 1:])
    assert ablation["bootstrap"]["n_sessions"] == 4
    assert (cv_dir / "ablation.png").is_file()
    lines = out.splitlines()
    assert any("GNN inputs swapped on one encoder per fold trained on all modalities" in line for line in lines)
    eda = ablation["rows"][1]["gnn_minus_all"]["macro_f1"]
    assert any(line.startswith("eda ") and line.endswith(f"{eda:+.4f} [n/a (4 sessions)]") for line in lines)


def test_class_weights_get_their_own_folder(seeded: dict) -> None:
    cv_dir = seeded["cv_dir"]
    weighted = cv_dir.with_name("KEMDy20_cv2_cw")
    out = seeded["run"]("--class_weight")
    assert out.strip().splitlines()[-1] == str(weighted / f"summary_{ALL}.json")
    assert out.count("] running") == 2 * 4  # nothing shared with the unweighted folds
    for k in range(2):
        opt = util.read_json(weighted / f"fold_{k}" / "encoder" / "ste_encoder_config.json")["optimization"]
        assert opt["class_weight"] is True
        assert util.read_json(weighted / f"fold_{k}" / f"gnn_{ALL}" / "metrics.json")["args"]["class_weight"] is True
        assert util.read_json(cv_dir / f"fold_{k}" / f"gnn_{ALL}" / "metrics.json")["args"]["class_weight"] is False
    assert seeded["run"]().count("] running") == 0  # the unweighted run's cache is intact


def test_single_run_seeds_on_one_encoder(seeded: dict) -> None:
    # the default split (train 1, 2; validation 33; test 37): the first seed's chain, then seed 1's GNN on it
    results, second = seeded["cv_dir"].parent, seeded["seeds"][1]
    out = seeded["run"]("--cv", "0", "--seeds", "2", "--keep_encoder")
    exp = f"KEMDy20_{ALL}"
    assert "[STE_train] running" in out and f"[train_val seed {second}] running" in out
    assert out.strip().splitlines()[-1] == str(results / f"seeds_{exp}_keep_encoder.json")
    summary = util.read_json(results / f"seeds_{exp}_keep_encoder.json")
    for seed, run in zip(seeded["seeds"], summary["per_seed"], strict=True):
        path = results / (exp if seed != second else f"{exp}_seed{second}") / "metrics.json"
        metrics = util.read_json(path)
        assert run["metrics_path"] == str(path) and metrics["args"]["seed"] == seed
        assert run["pooled"]["gnn"]["macro_f1"] == pytest.approx(metrics["test"]["segment"]["macro_f1"])
        assert run["pooled"]["gnn"]["n_sessions"] == 1
    assert summary["macro_f1"]["gnn"]["per_seed"] == [r["pooled"]["gnn"]["macro_f1"] for r in summary["per_seed"]]
    # one test session: no interval (it was a point, [x, x]), and the table says why
    assert summary["macro_f1"]["gnn"]["ci95_per_seed"] == [None, None]
    gnn_first = summary["macro_f1"]["gnn"]["per_seed"][0]
    assert any(line.startswith("gnn ") and line.endswith(f"{gnn_first:.4f} [n/a (1 session)]")
               for line in out.splitlines())


def test_cross_identity_graphs_are_built_beside_the_default_on_the_same_encoders(seeded: dict) -> None:
    cv_dir = seeded["cv_dir"]
    out = seeded["run"]("--seeds", "2", "--cross_identity", "ciy")
    trees = [cv_dir, cv_dir / f"seed_{seeded['seeds'][1]}"]
    for seed_note in ("", f" seed {seeded['seeds'][1]}"):
        for k in range(2):
            for stage in ("STE_train", "STE_forward"):
                assert f"[fold {k}{seed_note} {stage}] up to date, skipped" in out  # the default's, reused
            for stage in ("generate_graph ciy", f"train_val {ALL} ciy"):
                assert f"[fold {k}{seed_note} {stage}] running" in out
    assert out.count("] running") == 2 * 2 * 2
    assert out.strip().splitlines()[-1] == str(cv_dir / f"seeds_{ALL}_ciy.json")
    for tree in trees:
        assert (tree / f"summary_{ALL}_ciy.json").is_file()
        for k in range(2):
            fold = tree / f"fold_{k}"
            args = util.read_json(fold / f"gnn_{ALL}_ciy" / "metrics.json")["args"]
            assert args["cross_identity"] == "ciy" and args["features_dir"] == str(fold / "features")
            edges = {}
            for identity in ("cin", "ciy"):
                (graph_dir,) = (fold / "graphs").glob(f"*_{identity}")
                edges[identity] = sum(torch.load(path, weights_only=False)["edge_index"].shape[1]
                                      for path in sorted(graph_dir.glob("test/processed/*.pt")))
            assert edges["ciy"] > edges["cin"] > 0  # edges to the other speaker on top of the default's
    # the same encoder in both: the paired comparison gives the encoder no difference on any seed
    comparison = cv_results.compare_seeds(cv_dir, cv_dir, config.MODALITIES, n_boot=50, suffix_b="_ciy")
    assert comparison["over_seeds"]["encoder"]["per_seed"] == [0.0, 0.0]
    assert seeded["run"]("--seeds", "2").count("] running") == 0  # the default's stage cache is intact
