"""predict.py end to end on the `tiny` preset: a one-epoch encoder, a two-epoch GNN (and a two-epoch
causal one), then the CLI on test session 37 (CSV rows, probabilities, true labels, timelines,
agreement with train_val's own test predictions), on unlabelled and annotation-less copies of it,
from the one model folder, online, and its bad-input errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from script_module import load_script

from encoder.core import checkpoints, config, extraction, frames, handcrafted, metrics, training, util
from temporal_gnn import gnn_model, gnn_training, graph_building, labelling, model_folder

# participant normalisation on (off by default): the causal model's prefix statistics are what these tests check
predict = load_script(config.REPO_ROOT / "predict.py")  # the script, for its main() in this process
TINY_INPUTS = {"sample_rate": 4000, "n_fft": 256, "win_length": 250, "hop_length": 250, "n_mels": 16, "fmax": None,
               "participant_norm": True}
GRAPH_FLAGS = ["--numv", "40", "--time_edge", "7.2"]
SESSION = 37  # the tiny preset's test session
PROBS = [f"p_{e}" for e in config.EMOTIONS]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_encoder(tiny_root: Path, work: Path) -> Path:
    """A one-epoch encoder on the tiny preset: work/ste/best.pth."""
    training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS, log=None, optimization={
        "epochs": 1, "scheduler_T_max": 1, "batch_size": 8, "num_workers": 0, "out_dir": work / "ste",
        "progress": False, "val_step_stride": 2})
    return work / "ste" / "best.pth"


def tiny_features(tiny_root: Path, work: Path, folder: str = "features", **extra: Any) -> Path:
    """Features of work/ste/best.pth in work/<folder> (`extra`: more extract_features arguments)."""
    extraction.extract_features(11, "cpu", root=tiny_root, checkpoint=work / "ste" / "best.pth",
                                out_dir=work / folder, forward={"num_workers": 0, "progress": False}, log=None,
                                **extra)
    return work / folder


def tiny_gnns(work: Path, runs: dict[str, list[str]], features: str = "features", graphs: str = "graphs") -> None:
    """Graphs of work/<features> in work/<graphs>, then one 2-epoch GNN per run (exp name -> extra
    train_val flags) in work/results/<exp>."""
    flags = ["--features_dir", str(work / features), "--graphs_dir", str(work / graphs), *GRAPH_FLAGS]
    graph_building.run(flags)
    for exp, extra in runs.items():
        gnn_training.run([
            *flags, "--results_dir", str(work / "results"), "--exp", exp, "--num_epoch", "2", "--channel1", "16",
            "--channel2", "8", "--batch_size", "4", "--patience", "0", "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def models(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Encoder (1 epoch) -> features -> graphs -> GNN, and causal features (prefix participant
    statistics: participant_norm is on) -> graphs -> causal GNN (2 epochs each), all under one temporary
    folder."""
    work = tmp_path_factory.mktemp("predict")
    tiny_encoder(tiny_root, work)
    assert checkpoints.load_encoder_checkpoint(work / "ste" / "best.pth")["inputs"]["participant_norm"]
    tiny_features(tiny_root, work)
    tiny_gnns(work, {"tiny": ["--decision_tau_grid", "0,0.5,1,2"]})  # the decision predict.py must repeat
    tiny_features(tiny_root, work, "features_causal", causal=True)
    tiny_gnns(work, {"tiny_causal": ["--causal"]}, "features_causal", "graphs_causal")
    return {"work": work, "root": tiny_root, "encoder": work / "ste" / "best.pth",
            "gnn": work / "results" / "tiny" / "best.pth",
            "model": work / "results" / "tiny", "causal": work / "results" / "tiny_causal"}


def run_predict(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "predict.py", "--num_workers", "0", *map(str, args)],
                          cwd=config.REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)


def predict_in_process(*args: str | Path) -> str:
    """predict.py's main in this process (an interpreter start spared); returns what it printed."""
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(sys, "argv", ["predict.py", "--num_workers", "0", "--device", "cpu", *map(str, args)])
        predict.main()
    return printed.getvalue()


def copy_session(source: Path, target: Path, annotation: bool = True, wavs: list[str] | None = None) -> Path:
    """Session SESSION of `source` alone in a new folder in the KEMDy20 layout: wav, EDA, TEMP and (when
    `annotation`) its annotation file; `wavs` keeps only those segments' wav files."""
    folder = f"Session{SESSION}"
    for modality in ("wav", "EDA", "TEMP"):
        shutil.copytree(source / modality / folder, target / modality / folder)
    if wavs is not None:
        for path in (target / "wav" / folder).iterdir():
            if path.stem not in wavs:
                path.unlink()
    if annotation:
        (target / "annotation").mkdir()
        shutil.copy(source / "annotation" / f"Sess{SESSION}_eval.csv", target / "annotation")
    return target


def edit_annotation(root: Path, edit) -> Path:
    """Rewrite every segment row of root's annotation with `edit(row number from 3, fields)`."""
    path = root / "annotation" / f"Sess{SESSION}_eval.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [",".join(edit(i, line.split(","))) for i, line in enumerate(lines[2:], start=3)]
    path.write_text("\n".join([*lines[:2], *rows]) + "\n", encoding="utf-8")
    return path


def blank_labels(_row: int, fields: list[str]) -> list[str]:
    """A new recording's annotation: segment ID and wav start/end, every label field (total and the
    ten evaluators' emotion, valence, arousal) empty."""
    return fields[:4] + [""] * (len(fields) - 4)


@pytest.fixture(scope="module")
def copies(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Session 37 as a user would bring it: labels left empty, and no annotation at all."""
    base = tmp_path_factory.mktemp("copies")
    unlabelled = copy_session(tiny_raw, base / "unlabelled")
    edit_annotation(unlabelled, blank_labels)
    return {"unlabelled": unlabelled, "bare": copy_session(tiny_raw, base / "bare", annotation=False)}


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


def test_csv_has_one_row_per_annotated_segment(predicted: dict, tiny_root: Path, models: dict[str, Path]) -> None:
    table = predicted["table"]
    assert list(table.columns) == list(labelling.COLUMNS)
    built = frames.build_frames(tiny_root)
    annotated = built.segments[built.segments["session"] == SESSION]
    assert sorted(table["segment_id"]) == sorted(annotated["segment_id"])
    unusable = table[table["reason"] != ""]
    assert dict(zip(unusable["segment_id"], unusable["reason"], strict=True)) == {
        k: v for k, v in built.dropped.items() if util.parse_segment_id(k)["session"] == SESSION}
    assert (unusable[[*PROBS, "predicted"]] == "").all().all()
    table = table[table["reason"] == ""].reset_index(drop=True)
    gt = built.gt[built.gt["session"] == SESSION].set_index("segment_id").loc[table["segment_id"]]
    assert sorted(table["segment_id"]) == sorted(gt.index) and len(table) == len(gt) > 0
    assert (table["session"] == SESSION).all()
    assert table["script"].tolist() == [util.parse_segment_id(s)["script"] for s in table["segment_id"]]
    assert table["identity"].tolist() == gt["identity"].tolist()
    assert (table["time_from"] == "wav").all()
    np.testing.assert_allclose(table[["start_s", "end_s"]].to_numpy(), gt[["wav_start", "wav_end"]].to_numpy(),
                               rtol=1e-5)
    probs = table[PROBS].to_numpy(dtype=float)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert ((probs >= 0) & (probs <= 1)).all()
    decision = util.read_json(models["gnn"].parent / "metrics.json")["decision"]  # the tau chosen on validation
    assert table["predicted"].tolist() == [config.EMOTIONS[k] for k in metrics.decided(probs, decision)]
    assert table["true"].tolist() == [config.EMOTIONS[t] for t in gt["target"]]
    # participant_norm: every participant's statistics came from all its segments in the folder
    sizes = table.groupby("identity")["segment_id"].transform("size")
    assert table["participant_segments"].astype(int).tolist() == sizes.tolist()
    assert (unusable["participant_segments"].astype(str) == "").all()


def test_agrees_with_train_val_test_predictions(predicted: dict, models: dict[str, Path]) -> None:
    """Session 37 is the tiny preset's test split: train_val already predicted it from the stored
    features; predict.py, embedding in memory, must give the same segment probabilities."""
    table = predicted["table"]
    table = table[table["reason"] == ""].set_index("segment_id")
    stored = pd.read_csv(models["gnn"].parent / "predictions_test.csv").set_index("segment_id")
    assert sorted(stored.index) == sorted(table.index)
    stored = stored.loc[table.index]
    np.testing.assert_allclose(table[PROBS].to_numpy(dtype=float), stored[PROBS].to_numpy(), atol=2e-4)
    assert table["true"].tolist() == stored["target"].tolist()
    # the segment decision, its tau chosen on validation, is model.json's and train_val's
    decision = util.read_json(models["gnn"].parent / "metrics.json")["decision"]
    assert decision["grid"] == [0.0, 0.5, 1.0, 2.0] and decision["tau"] in decision["grid"]
    assert util.read_json(models["gnn"].parent / "model" / "model.json")["settings"]["decision"] == decision
    assert table["predicted"].tolist() == stored["prediction"].tolist()


def test_one_timeline_per_script(predicted: dict) -> None:
    out, table = predicted["out"], predicted["table"]
    expected = {out.parent / f"pred_Sess{SESSION}_script{c:02d}.png" for c in table["script"].unique()}
    assert set(out.parent.glob("*.png")) == expected and len(expected) >= 2
    for path in expected:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not list(out.parent.glob(".*tmp"))


def test_a_segment_without_wav_is_a_row_with_its_reason(models: dict[str, Path], tiny_raw: Path,
                                                         tmp_path: Path) -> None:
    root = copy_session(tiny_raw, tmp_path / "one_wav_less")
    annotated = frames.build_frames(root).segments["segment_id"].tolist()
    gone = sorted((root / "wav" / f"Session{SESSION}").glob("*.wav"))[3]
    gone.unlink()
    out = tmp_path / "pred.csv"
    printed = predict_in_process("--model", models["model"], "--session", root, "--out", out)
    table = pd.read_csv(out, keep_default_na=False)
    assert sorted(table["segment_id"]) == sorted(annotated)  # one row per annotated segment, none left out
    row = table.set_index("segment_id").loc[gone.stem]
    assert row["reason"] == "no_wav" and row["predicted"] == "" and (row[PROBS] == "").all()
    assert row["time_from"] == "wav" and row["true"] != ""  # the annotation's times and label stay
    others = table[table["segment_id"] != gone.stem]
    counts = others["reason"].value_counts().to_dict()
    n_predicted = counts.pop("")
    assert f"predicted {n_predicted} of {len(table)} segments" in printed
    expected = ", ".join(f"{n} {r}" for r, n in sorted({**counts, "no_wav": 1}.items()))
    assert f"not predicted {len(table) - n_predicted} segments (rows with empty probabilities and a reason): " \
           f"{expected}" in printed


def test_prints_score_and_paths(predicted: dict) -> None:
    table, stdout = predicted["table"], predicted["stdout"]
    table = table[table["reason"] == ""]
    accuracy = (table["predicted"] == table["true"]).mean()
    assert f"accuracy {accuracy:.4f}" in stdout and "macro-F1" in stdout
    assert f"predictions: {predicted['out']}" in stdout and "timelines:" in stdout
    counts = ", ".join(f"Sess{SESSION} {i} {n}" for i, n in table.groupby("identity").size().items())
    assert f"participant statistics from the segments in this folder, per participant: {counts}" in stdout


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
        assert gnn_model.CHECKPOINT_FORMAT in err[-1]
    assert not list(tmp_path.glob("pred*"))


def test_feature_mismatch_old_model_folders_and_missing_graph_settings(models: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    state = checkpoints.load_encoder_checkpoint(models["encoder"])
    path = tmp_path / "best.pth"
    gnn_model.save_checkpoint(gnn_model.SPELL({"audio": 16, "eda": 8, "temp": 8}), path, epoch=1)
    gnn, _ = gnn_model.load_checkpoint(path)
    with pytest.raises(util.DataError, match="GNN expects node features") as err:
        labelling.check_compatible(gnn, path, state, models["encoder"])
    assert str(path) in str(err.value)
    spec = util.read_json(models["model"] / model_folder.FOLDER / model_folder.MANIFEST)
    for name, edit, message in (("old", {"format": "kemdy20-model/1"}, "retrain with train_val.py"),
                                ("no_graph", {"graph": {"numv": 40}}, "no graph settings")):
        util.write_json({**spec, **edit}, tmp_path / name / model_folder.MANIFEST)
        with pytest.raises(util.DataError, match=message) as err:
            model_folder.read(tmp_path / name / model_folder.MANIFEST)
        assert str(tmp_path / name / model_folder.MANIFEST) in str(err.value)


def test_unknown_session_is_an_error(tiny_root: Path) -> None:
    with pytest.raises(util.DataError, match="session 5 has no usable segment") as err:
        labelling.session_segments(tiny_root, [5])
    assert str(tiny_root) in str(err.value)


@pytest.mark.parametrize("form", ["unlabelled", "bare"])
def test_unlabelled_and_annotation_less_copies_predict_like_the_labelled_original(
        form: str, copies: dict[str, Path], predicted: dict, models: dict[str, Path], tiny_raw: Path) -> None:
    """Empty label fields, or no annotation at all: the same nodes and the same probabilities as the
    labelled original, no true labels and nothing about accuracy; without annotation the times come
    from the bio timestamps and say so."""
    root = copies[form]
    original = frames.build_frames(tiny_raw).nodes
    nodes = frames.build_frames(root, labels_required=False).nodes
    pd.testing.assert_frame_equal(nodes.reset_index(drop=True),
                                  original[original["session"] == SESSION].reset_index(drop=True))
    out = models["work"] / form / "pred.csv"
    stdout = predict_in_process("--model", models["model"], "--session", root, "--out", out)
    table = pd.read_csv(out, keep_default_na=False).set_index("segment_id")
    expected = predicted["table"].set_index("segment_id")
    assert sorted(table.index) == sorted(expected.index)
    table = table.loc[expected.index]
    assert table["reason"].tolist() == expected["reason"].tolist()
    table, expected = table[table["reason"] == ""], expected[expected["reason"] == ""]
    np.testing.assert_allclose(table[PROBS].to_numpy(dtype=float), expected[PROBS].to_numpy(dtype=float), atol=1e-5)
    assert table["predicted"].tolist() == expected["predicted"].tolist()
    assert (table["true"] == "").all() and "accuracy" not in stdout and "macro-F1" not in stdout
    if form == "unlabelled":
        assert (table["time_from"] == "wav").all()
        np.testing.assert_allclose(table[["start_s", "end_s"]].to_numpy(), expected[["start_s", "end_s"]].to_numpy())
    else:
        assert (table["time_from"] == "bio").all() and "time_from = bio" in stdout
        first = nodes.groupby("segment_id")["ts"].agg(["min", "max", "size"]).loc[table.index]
        np.testing.assert_allclose(table["start_s"], first["min"])
        np.testing.assert_allclose(table["end_s"], first["max"] + config.BIO_STEP_S)
    assert len(list(out.parent.glob("pred_*.png"))) == table["script"].nunique()


def test_training_still_refuses_unlabelled_data(copies: dict[str, Path]) -> None:
    path = copies["unlabelled"] / "annotation" / f"Sess{SESSION}_eval.csv"
    with pytest.raises(util.DataError, match="row 3: wav start/end or valence/arousal missing") as err:
        frames.build_frames(copies["unlabelled"])
    assert str(path) in str(err.value)
    with pytest.raises(util.DataError, match="no annotation/SessSS_eval.csv files"):
        frames.build_frames(copies["bare"])


def test_model_folder_holds_everything_prediction_needs(models: dict[str, Path], tmp_path: Path) -> None:
    folder = models["model"] / model_folder.FOLDER
    spec = json.loads((folder / model_folder.MANIFEST).read_text())
    state = checkpoints.load_encoder_checkpoint(models["encoder"])
    assert spec["encoder"]["sha256"] == util.file_sha256(models["encoder"]) == util.file_sha256(folder / "encoder.pth")
    assert spec["gnn"]["sha256"] == util.file_sha256(models["gnn"]) == util.file_sha256(folder / "gnn.pth")
    graph_build = util.read_json(Path(util.read_json(models["model"] / "metrics.json")["graphs"]["dir"])
                                 / "graph_build.json")
    assert spec["graph"] == graph_build["build"] and spec["graph"]["numv"] == 40  # copied verbatim, the one record
    assert spec["classes"] == list(config.EMOTIONS) and spec["feature_precision"] == "float32"
    assert spec["normalization"] == state["normalization"] and spec["clip_length"] == state["inputs"]["clip_length"]
    options = ("bio_clip_length", "participant_norm", "eda_components", "audio_pass", "segment_chunk_frames",
               "segment_context_frames")
    assert spec["spectrogram"] == {k: v for k, v in state["inputs"].items() if k != "clip_length" and k not in options}
    assert spec["input_options"] == {"bio_clip_length": 11, "participant_norm": True,
                                     "eda_components": config.STE_inputs["eda_components"],
                                     **{k: config.STE_inputs[k] for k in options[3:]}}
    assert spec["participant_statistics"] == "session"
    # the folder works wherever it is copied; without its encoder.pth it finds the recorded source by hash
    moved = tmp_path / "model"
    shutil.copytree(folder, moved, copy_function=os.link)
    assert model_folder.load(moved)["encoder_path"] == moved / "encoder.pth"
    (moved / "encoder.pth").unlink()
    assert model_folder.load(moved)["encoder_path"] == models["encoder"]
    (moved / "gnn.pth").unlink()
    (moved / "gnn.pth").write_bytes(b"another file")
    with pytest.raises(util.DataError, match="differs from the one the model folder records") as err:
        model_folder.load(moved)
    assert str(moved / "gnn.pth") in str(err.value)


def causal_model_probs(models: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The causal model's offline node and segment probabilities of test session 37, as train_val.py scores
    them: its causal features (STE_forward --causal) on one unchunked graph of the session."""
    loaded = model_folder.load(models["causal"])
    gnn, _ = gnn_model.load_checkpoint(loaded["gnn_path"])
    features = models["work"] / "features_causal"
    manifest = util.read_json(features / extraction.MANIFEST_FILE)
    assert manifest["participant_statistics"] == "prefix"
    nodes = graph_building.read_nodes(features / "features_test" / f"Sess{SESSION}.pkl", manifest["feature_dim"])
    (graph,) = graph_building.session_graphs(nodes, len(nodes["time_s"]), 7.2, "cin")
    with torch.no_grad():
        probs = torch.softmax(gnn.eval()(graph.x, graph.edge_index, graph.edge_attr), dim=1).numpy()
    node_table = pd.DataFrame(probs, columns=PROBS).assign(segment_id=graph.segment_id,
                                                           time_s=np.round(graph.time_s.numpy(), 3))
    return node_table.set_index(["segment_id", "time_s"]), node_table.groupby("segment_id")[PROBS].mean()


def test_online_labels_equal_the_causal_models_offline_predictions(models: dict[str, Path]) -> None:
    """predict.py --online (node by node, prefix participant statistics) and predict.py without it (batched)
    give the causal model's offline probabilities: the ones train_val.py trained, selected and scored it on
    (its causal features, one unchunked graph per session), within 1e-5, no label changed."""
    expected_nodes, expected = causal_model_probs(models)
    out = models["work"] / "online" / "pred.csv"
    stdout = predict_in_process("--model", models["causal"], "--session", models["root"], "--sessions", str(SESSION),
                                "--out", out, "--online")
    assert "labelled as they arrived" in stdout and "up to its clip end" in stdout
    replayed = pd.read_csv(labelling.node_csv(out))
    assert replayed["time_s"].is_monotonic_increasing  # arrival order
    replayed = replayed.assign(time_s=replayed["time_s"].round(3)).set_index(["segment_id", "time_s"])
    assert sorted(replayed.index) == sorted(expected_nodes.index)  # every node once
    gap = np.abs(replayed[PROBS].to_numpy() - expected_nodes.loc[replayed.index, PROBS].to_numpy()).max()
    assert gap <= 1e-5
    batched = models["work"] / "online" / "batched.csv"
    predict_in_process("--model", models["causal"], "--session", models["root"], "--sessions", str(SESSION),
                       "--out", batched)
    for path in (out, batched):
        table = pd.read_csv(path, keep_default_na=False)
        table = table[table["reason"] == ""].set_index("segment_id")
        assert sorted(table.index) == sorted(expected.index)
        got, want = table[PROBS].to_numpy(dtype=float), expected.loc[table.index].to_numpy()
        assert np.abs(got - want).max() <= 1e-5
        assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_causal_and_offline_models_refuse_each_others_features(models: dict[str, Path], tmp_path: Path) -> None:
    """With participant_norm on, train_val.py --causal refuses features with whole-session statistics and
    train_val.py refuses prefix ones, naming the feature manifest."""
    for features, graphs, causal in (("features", "graphs", ["--causal"]), ("features_causal", "graphs_causal", [])):
        with pytest.raises(util.DataError, match="participant statistics") as err:
            gnn_training.run([
                "--features_dir", str(models["work"] / features), "--graphs_dir", str(models["work"] / graphs),
                *GRAPH_FLAGS, "--results_dir", str(tmp_path), "--num_epoch", "1", "--device", "cpu", *causal])
        assert str(models["work"] / features / extraction.MANIFEST_FILE) in str(err.value)
    assert not list(tmp_path.iterdir())


def test_a_causal_gnn_trained_on_whole_session_statistics_is_refused(models: dict[str, Path]) -> None:
    """A causal model folder whose features had whole-session participant statistics (or that records none,
    from before the record) would be fed prefix statistics it never saw: predict.py refuses it."""
    folder = model_folder.load(models["causal"])
    state = checkpoints.load_encoder_checkpoint(folder["encoder_path"])
    assert folder["participant_statistics"] == "prefix"
    labelling.check_causal_inputs(folder, state, folder["gnn_path"])
    for stale in ("session", None):
        with pytest.raises(util.DataError, match="not the prefix ones it runs on") as err:
            labelling.check_causal_inputs({**folder, "participant_statistics": stale}, state, folder["gnn_path"])
        assert str(folder["gnn_path"]) in str(err.value)
    no_options = {**state, "inputs": {**state["inputs"], "participant_norm": False, "eda_components": False}}
    labelling.check_causal_inputs({**folder, "participant_statistics": None}, no_options, folder["gnn_path"])


def test_online_refuses_a_gnn_that_reads_a_whole_segment_block(tmp_path: Path) -> None:
    dims = {"audio": 512, "eda": 512, "temp": 512, "text": 32}
    for block in ("text", "lm", "ssl"):
        gnn = gnn_model.SPELL({**dims, block: 32}, ["audio", block], causal=True)
        with pytest.raises(util.DataError, match=f"--online cannot feed {block}") as err:
            labelling.check_online_blocks(gnn, tmp_path / "gnn.pth")
        assert str(tmp_path / "gnn.pth") in str(err.value)
    labelling.check_online_blocks(gnn_model.SPELL(dims, causal=True), tmp_path / "gnn.pth")  # text unread: fine


@pytest.mark.parametrize("bad", ["malformed_emotion", "malformed_valence", "stray_wav", "offline_model_online",
                                 "no_model"])
def test_new_bad_input_is_a_one_line_error(bad: str, copies: dict[str, Path], models: dict[str, Path],
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    """A malformed (not merely empty) field of an unlabelled annotation, a wav that names no segment where
    there is no annotation, --online with an offline GNN, a folder that is no model folder: exit status 1,
    one `error:` line naming the file (and row), no CSV."""
    root, model, extra = copies["unlabelled"], models["model"], []
    named = ""
    if bad.startswith("malformed"):
        root = shutil.copytree(copies["unlabelled"], tmp_path / "copy")
        column, value = (4, "hapy") if bad == "malformed_emotion" else (5, "high")
        named = str(edit_annotation(root, lambda row, f: [*f[:column], value, *f[column + 1:]] if row == 4 else f))
        named += ", row 4"
    elif bad == "stray_wav":
        root = shutil.copytree(copies["bare"], tmp_path / "copy")
        named = str(shutil.copy(next((root / "wav" / f"Session{SESSION}").glob("*.wav")),
                                root / "wav" / f"Session{SESSION}" / "notes.wav"))
    elif bad == "offline_model_online":
        extra, named = ["--online"], str(models["model"] / "model" / "gnn.pth")
    else:
        model, named = tmp_path, str(tmp_path)
    argv = ["predict.py", "--model", str(model), "--session", str(root), "--out", str(tmp_path / "pred.csv"), *extra]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        util.run_cli(predict.main)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0]
    assert not list(tmp_path.glob("pred*"))


def test_embedding_precision_follows_the_training_features() -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert labelling.embedding_amp("float32", cuda) == ({"amp": False}, None)  # not the configured amp=True
    assert labelling.embedding_amp(extraction.FLOAT16, cuda) == ({"amp": True}, None)
    settings, note = labelling.embedding_amp(extraction.FLOAT16, cpu)
    assert settings == {"amp": False} and "float16" in note
    assert labelling.embedding_amp(None, cuda) == ({}, None)  # unrecorded (older files): the configured default


def run_pair(encoder: Path, gnn: Path, tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture) -> str:
    """predict.py --encoder --gnn through its entry point; asserts a one-line error and no output, returns it."""
    monkeypatch.setattr(sys, "argv", ["predict.py", "--encoder", str(encoder), "--gnn", str(gnn), "--session",
                                      str(tiny_root), "--sessions", str(SESSION), "--out", str(tmp_path / "pred.csv"),
                                      "--num_workers", "0", "--device", "cpu"])
    with pytest.raises(SystemExit) as exited:
        util.run_cli(predict.main)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not list(tmp_path.glob("pred*"))
    return err[0]


def test_an_encoder_other_than_the_gnns_features_came_from_is_an_error(
        models: dict[str, Path], tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """--encoder A --gnn B, B trained on features of another encoder: refused, naming both sha256."""
    other = tmp_path / "other.pth"
    checkpoints.save_torch_file({**checkpoints.load_encoder_checkpoint(models["encoder"]), "note": "retrained"}, other)
    error = run_pair(other, models["gnn"], tiny_root, tmp_path, monkeypatch, capsys)
    assert util.file_sha256(other) in error and util.file_sha256(models["encoder"]) in error
    assert str(other) in error


@pytest.mark.parametrize("record", ["no_model_folder", "no_encoder_hash"])
def test_a_gnn_without_a_record_of_its_features_encoder_is_an_error(
        record: str, models: dict[str, Path], tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """A GNN checkpoint without its model.json, or whose model.json names no encoder sha256: the encoder
    given with it cannot be checked, which is an error too."""
    gnn = shutil.copy(models["gnn"], tmp_path / "best.pth")
    if record == "no_encoder_hash":
        spec = util.read_json(models["model"] / model_folder.FOLDER / model_folder.MANIFEST)
        spec["encoder"]["sha256"] = None
        util.write_json(spec, tmp_path / model_folder.FOLDER / model_folder.MANIFEST)
    error = run_pair(models["encoder"], gnn, tiny_root, tmp_path, monkeypatch, capsys)
    assert str(gnn) in error and "cannot be checked" in error


# --------------------------------------------------------------------------- the classical system and prosody


def test_classical_system_is_fitted_saved_and_labels_beside_the_gnn(predicted: dict, models: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    run = models["model"]
    entry = util.read_json(run / "metrics.json")["baselines"]["classical"]
    assert entry["groups"] == ["audio", "eda", "temp"] and entry["participant_statistics"] == "session"
    assert entry["C"] in config.CLASSICAL["C_grid"] and set(entry["val_macro_f1"]) == {
        f"{c:g}" for c in config.CLASSICAL["C_grid"]}
    stored = pd.read_csv(run / "predictions_test_classical.csv").set_index("segment_id")
    assert sorted(stored.index) == sorted(pd.read_csv(run / "predictions_test.csv")["segment_id"])
    record = util.read_json(run / "model" / "model.json")["systems"]["classical"]
    assert record["file"] == "classical.npz"
    assert record["sha256"] == util.file_sha256(run / "model" / "classical.npz")
    # session 37 is the tiny preset's test session: the same segments, so the same participant statistics
    table = predicted["table"]
    table = table[table["reason"] == ""].set_index("segment_id")
    assert table["classical_predicted"].tolist() == stored.loc[table.index, "prediction"].tolist()
    assert "classical" in predicted["stdout"]
    # the fusion system: train_val's weight, recorded in model.json, gives predict.py train_val's decisions
    weight = util.read_json(run / "model" / "model.json")["settings"]["fusion"]["weight"]
    assert weight in config.GNN["fusion_weight_grid"]
    assert util.read_json(run / "metrics.json")["baselines"]["fusion"]["weight"] == weight
    fused = pd.read_csv(run / "predictions_test_fusion.csv").set_index("segment_id")
    assert table["fusion_predicted"].tolist() == fused.loc[table.index, "prediction"].tolist()
    assert "fusion system (column fusion_predicted)" in predicted["stdout"]
    # an altered classical system is refused by name
    copy = tmp_path / "model"
    shutil.copytree(run / "model", copy)
    (copy / "classical.npz").write_bytes(b"not a model")
    with pytest.raises(util.DataError, match="classical system differs from the one the model folder records"):
        model_folder.load(copy)


def test_prosody_block_trains_the_gnn_and_predict_appends_it_as_train_val_did(models: dict[str, Path]) -> None:
    work = models["work"]
    tiny_gnns(work, {"tiny_prosody": ["--modalities", "prosody,audio"]}, graphs="graphs_prosody")
    run = work / "results" / "tiny_prosody"
    folder = util.read_json(run / "model" / "model.json")
    assert list(folder["feature_dims"])[-1] == "prosody"
    assert folder["feature_dims"]["prosody"] == len(handcrafted.SPEECH_NAMES)
    gnn, _ = gnn_model.load_checkpoint(run / "best.pth")
    assert gnn.modalities == ("audio", "prosody")  # in the features' block order
    metrics = util.read_json(run / "metrics.json")
    assert metrics["baselines"]["temporal"]["model"]["config"]["modalities"] == ["audio", "prosody"]
    assert metrics["baselines"]["classical"]["groups"] == ["audio"]  # the speech statistics, once
    out = work / "out_prosody" / "pred.csv"
    predict_in_process("--model", run, "--session", models["root"], "--sessions", str(SESSION), "--out", out)
    table = pd.read_csv(out, keep_default_na=False)
    table = table[table["reason"] == ""].set_index("segment_id")
    stored = pd.read_csv(run / "predictions_test.csv").set_index("segment_id").loc[table.index]
    np.testing.assert_allclose(table[PROBS].to_numpy(dtype=float), stored[PROBS].to_numpy(), atol=2e-4)


def test_a_causal_gnn_refuses_the_prosody_block(models: dict[str, Path]) -> None:
    flags = ["--features_dir", str(models["work"] / "features_causal"), "--graphs_dir",
             str(models["work"] / "graphs_causal"), *GRAPH_FLAGS, "--results_dir", str(models["work"] / "results"),
             "--exp", "refused", "--causal", "--modalities", "prosody,audio", "--num_epoch", "1"]
    with pytest.raises(util.DataError, match="--causal cannot read prosody: computed from the whole segment"):
        gnn_training.run(flags)
