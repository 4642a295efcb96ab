"""predict.py end to end on the `tiny` preset: a one-epoch encoder, a two-epoch GNN, then the CLI on
test session 37 (CSV rows, probabilities, true labels, timelines, agreement with train_val's own test
predictions) and its bad-input errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import generate_graph
import models_gnn
import predict
import train_val
from encoder.core import checkpoints, config, extraction, frames, training, util

TINY_INPUTS = {"sample_rate": 4000, "n_fft": 256, "win_length": 250, "hop_length": 250, "n_mels": 16, "fmax": None}
GRAPH_FLAGS = ["--numv", "40", "--time_edge", "7.2"]
SESSION = 37  # the tiny preset's test session
PROBS = [f"p_{e}" for e in config.EMOTIONS]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Encoder (1 epoch) -> features -> graphs -> GNN (2 epochs), all under one temporary folder."""
    work = tmp_path_factory.mktemp("predict")
    training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS, log=None, optimization={
        "epochs": 1, "scheduler_T_max": 1, "batch_size": 8, "num_workers": 0, "out_dir": work / "ste",
        "progress": False, "val_step_stride": 2})
    extraction.extract_features(11, "cpu", root=tiny_root, checkpoint=work / "ste" / "best.pth",
                                  out_dir=work / "features", forward={"num_workers": 0, "progress": False}, log=None)
    flags = ["--features_dir", str(work / "features"), "--graphs_dir", str(work / "graphs"), *GRAPH_FLAGS]
    generate_graph.build_graphs(generate_graph.parse_args(flags))
    train_val.train_and_evaluate(train_val.parse_args([
        *flags, "--results_dir", str(work / "results"), "--exp", "tiny", "--num_epoch", "2", "--channel1", "16",
        "--channel2", "8", "--batch_size", "4", "--patience", "0", "--device", "cpu"]))
    return {"work": work, "encoder": work / "ste" / "best.pth", "gnn": work / "results" / "tiny" / "best.pth"}


def run_predict(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "predict.py", "--num_workers", "0", *map(str, args)],
                          cwd=config.REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def predicted(models: dict[str, Path], tiny_root: Path) -> dict:
    out = models["work"] / "out" / "pred.csv"
    before = listing(tiny_root)
    result = run_predict("--encoder", models["encoder"], "--gnn", models["gnn"], "--session", tiny_root,
                         "--sessions", str(SESSION), "--out", out)
    assert result.returncode == 0, result.stderr
    assert listing(tiny_root) == before  # nothing written into the user's folder
    return {"out": out, "table": pd.read_csv(out, keep_default_na=False), "stdout": result.stdout}


def test_csv_has_one_row_per_kept_segment(predicted: dict, tiny_root: Path) -> None:
    table = predicted["table"]
    assert list(table.columns) == list(predict.COLUMNS)
    gt = frames.build_frames(tiny_root).gt
    gt = gt[gt["session"] == SESSION].set_index("script").loc[table["segment_id"]]
    assert sorted(table["segment_id"]) == sorted(gt.index) and len(table) == len(gt) > 0
    assert (table["session"] == SESSION).all()
    assert table["script"].tolist() == [util.parse_segment_id(s)["script"] for s in table["segment_id"]]
    assert table["identity"].tolist() == gt["identity"].tolist()
    np.testing.assert_allclose(table[["start_s", "end_s"]].to_numpy(), gt[["wav_start", "wav_end"]].to_numpy(),
                               rtol=1e-5)
    probs = table[PROBS].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert ((probs >= 0) & (probs <= 1)).all()
    assert table["predicted"].tolist() == [config.EMOTIONS[k] for k in probs.argmax(axis=1)]
    assert table["true"].tolist() == [config.EMOTIONS[t] for t in gt["target"]]


def test_agrees_with_train_val_test_predictions(predicted: dict, models: dict[str, Path]) -> None:
    """Session 37 is the tiny preset's test split: train_val already predicted it from the stored
    features; predict.py, embedding in memory, must give the same segment probabilities."""
    table = predicted["table"].set_index("segment_id")
    stored = pd.read_csv(models["gnn"].parent / "predictions_test.csv").set_index("segment_id")
    assert sorted(stored.index) == sorted(table.index)
    stored = stored.loc[table.index]
    np.testing.assert_allclose(table[PROBS].to_numpy(), stored[PROBS].to_numpy(), atol=2e-4)
    assert table["true"].tolist() == stored["target"].tolist()


def test_one_timeline_per_script(predicted: dict) -> None:
    out, table = predicted["out"], predicted["table"]
    expected = {out.parent / f"pred_Sess{SESSION}_script{c:02d}.png" for c in table["script"].unique()}
    assert set(out.parent.glob("*.png")) == expected and len(expected) >= 2
    for path in expected:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not list(out.parent.glob(".*tmp"))


def test_prints_score_and_paths(predicted: dict) -> None:
    table, stdout = predicted["table"], predicted["stdout"]
    accuracy = (table["predicted"] == table["true"]).mean()
    assert f"accuracy {accuracy:.4f}" in stdout and "macro-F1" in stdout
    assert f"predictions: {predicted['out']}" in stdout and "timelines:" in stdout


@pytest.mark.parametrize("bad", ["encoder_as_gnn", "junk_gnn", "missing_encoder", "missing_folder"])
def test_bad_input_is_a_one_line_error(models: dict[str, Path], tiny_root: Path, tmp_path: Path, bad: str,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The script's own entry point (util.run_cli(main)) in this process, to spare an interpreter start:
    exit status 1, one `error:` line naming the file, no CSV."""
    paths = {"--encoder": models["encoder"], "--gnn": models["gnn"], "--session": tiny_root}
    flag, paths[flag] = {"encoder_as_gnn": ("--gnn", models["encoder"]),
                         "junk_gnn": ("--gnn", tmp_path / "junk.pth"),
                         "missing_encoder": ("--encoder", tmp_path / "none.pth"),
                         "missing_folder": ("--session", tmp_path / "no_such_root")}[bad]
    if bad == "junk_gnn":
        paths[flag].write_bytes(b"not a checkpoint")
    argv = [str(x) for item in paths.items() for x in item]
    monkeypatch.setattr(sys, "argv", ["predict.py", *argv, "--out", str(tmp_path / "pred.csv")])
    with pytest.raises(SystemExit) as exited:
        util.run_cli(predict.main)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and str(paths[flag]) in err[-1]
    assert sum(line.startswith("error:") for line in err) == 1
    if bad == "encoder_as_gnn":
        assert models_gnn.CHECKPOINT_FORMAT in err[-1]
    assert not list(tmp_path.glob("pred*"))


def test_feature_mismatch_and_missing_graph_settings(models: dict[str, Path], tmp_path: Path) -> None:
    state = checkpoints.load_encoder_checkpoint(models["encoder"])
    path = tmp_path / "best.pth"
    models_gnn.save_checkpoint(models_gnn.SPELL({"audio": 16, "eda": 8, "temp": 8}), path, epoch=1)
    gnn, ckpt = models_gnn.load_checkpoint(path)
    with pytest.raises(util.DataError, match="GNN expects node features") as err:
        predict.check_compatible(gnn, path, state, models["encoder"])
    assert str(path) in str(err.value)
    with pytest.raises(util.DataError, match="no graph settings") as err:
        predict.graph_settings(path, ckpt)
    assert str(path) in str(err.value)
    built = predict.graph_settings(models["gnn"], models_gnn.load_checkpoint(models["gnn"])[1])
    assert built == {"numv": 40, "time_edge": 7.2, "cross_identity": "cin"}


def test_unknown_session_is_an_error(tiny_root: Path) -> None:
    with pytest.raises(util.DataError, match="session 5 has no usable annotated segment") as err:
        predict.session_segments(tiny_root, [5])
    assert str(tiny_root) in str(err.value)
