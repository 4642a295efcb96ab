"""Training, validation, resume and feature extraction of the encoder on the `tiny` preset."""

import csv
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from encoder.core import checkpoints, config, distributed, extraction, frames, training, util
from encoder.core.custom_transforms import Normalization, SpectrogramParams
from encoder.core.dataset import load_segments

ENCODER_DIR = config.REPO_ROOT / "encoder"
TINY_INPUTS = {"sample_rate": 4000, "n_fft": 256, "win_length": 250, "hop_length": 250, "n_mels": 16, "fmax": None}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_optimization(out_dir, epochs=2):
    return {"epochs": epochs, "scheduler_T_max": 2, "batch_size": 8, "num_workers": 0, "out_dir": out_dir,
            "progress": False, "val_step_stride": 2}


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ste_train")
    summary = training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS,
                                         optimization=tiny_optimization(out_dir), log=None)
    return out_dir, summary


@pytest.fixture(scope="module")
def features(trained, tiny_root, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("features")
    metrics = extraction.extract_features(11, "cpu", root=tiny_root, checkpoint=trained[0] / "best.pth",
                                            out_dir=out_dir, forward={"num_workers": 0, "progress": False},
                                            log=None)
    return out_dir, metrics


def read_log(out_dir):
    with open(out_dir / training.LOG_NAME, newline="") as fh:
        return list(csv.DictReader(fh))


def test_training_lowers_the_loss_and_writes_log_and_checkpoints(trained):
    out_dir, summary = trained
    rows = read_log(out_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss_audio", "loss_eda", "loss_temp", "loss_fused", "val_loss", "val_accuracy",
            "val_macro_f1"} <= set(rows[0])
    assert float(rows[1]["loss_total"]) < float(rows[0]["loss_total"])
    assert all(0 < float(r["val_seconds"]) < float(r["seconds"]) for r in rows)  # validation is part of the epoch
    assert {p.name for p in out_dir.glob("*.pth")} == {"epoch_001.pth", "epoch_002.pth", "best.pth"}
    best = checkpoints.load_encoder_checkpoint(out_dir / "best.pth")
    assert best["epoch"] == summary["best_epoch"]
    # best.pth is the best epoch's file under a second name (written once), not a second copy
    assert (out_dir / "best.pth").samefile(out_dir / f"epoch_{summary['best_epoch']:03d}.pth")
    assert best["val"]["val_macro_f1"] == pytest.approx(max(float(r["val_macro_f1"]) for r in rows))
    recorded = util.read_json(out_dir / training.CONFIG_NAME)
    assert recorded["inputs"]["n_mels"] == 16
    assert recorded["environment"]["device"] == "cpu" and recorded["environment"]["python"].count(".") == 2
    assert not list(out_dir.glob(".*tmp"))


def test_validation_runs_in_eval_mode_on_a_fixed_set(trained, tiny_root):
    state = checkpoints.load_encoder_checkpoint(trained[0] / "best.pth")
    model = checkpoints.encoder_from_checkpoint(state, trained[0] / "best.pth").train()
    modes = []
    model.audio.bn1.register_forward_hook(lambda module, _inp, _out: modes.append(module.training))
    before = model.audio.bn1.running_mean.clone()
    segments = load_segments(frames.load_frames(tiny_root), tiny_root).by_split["val"]
    norm, params = Normalization.from_dict(state["normalization"]), SpectrogramParams.from_dict(state["inputs"])
    settings = {"batch_size": 32, "num_workers": 0, "amp": False, "progress": False, "val_step_stride": 1}
    runtime = distributed.Runtime(torch.device("cpu"))
    first = training.validate(runtime, model, segments, norm, 11, params, settings)
    second = training.validate(runtime, model, segments, norm, 11, params, settings)
    assert modes and not any(modes)
    assert torch.equal(before, model.audio.bn1.running_mean)
    assert first == second
    assert first["node"]["n"] == sum(s.n_steps for s in segments)


def test_resume_continues_from_the_saved_epoch(trained, tiny_root, tmp_path):
    training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS,
                               optimization=tiny_optimization(tmp_path, epochs=1), log=None)
    assert [int(r["epoch"]) for r in read_log(tmp_path)] == [1]
    # killed after epoch_001.pth was written and before best.pth: resuming writes the best state back
    (tmp_path / "best.pth").unlink()
    training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS,
                           optimization=tiny_optimization(tmp_path, epochs=1), resume=True, log=None)
    assert checkpoints.load_encoder_checkpoint(tmp_path / "best.pth")["epoch"] == 1
    training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS,
                               optimization=tiny_optimization(tmp_path, epochs=2), resume=True, log=None)
    resumed, straight = read_log(tmp_path), read_log(trained[0])
    assert [int(r["epoch"]) for r in resumed] == [1, 2]
    assert checkpoints.load_encoder_checkpoint(tmp_path / "epoch_002.pth")["epoch"] == 2
    # same seed and data: the resumed run matches the uninterrupted one
    assert float(resumed[1]["loss_total"]) == pytest.approx(float(straight[1]["loss_total"]), rel=1e-4)


def test_resume_with_other_splits_is_refused(tiny_root, tmp_path):
    training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS,
                           optimization=tiny_optimization(tmp_path, epochs=1), log=None)
    moved = {"train": (2,), "val": (33,), "test": (1, 37)}  # the default splits train on 1 and 2
    with pytest.raises(util.DataError, match="other session splits"):
        training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS,
                               optimization=tiny_optimization(tmp_path, epochs=2), splits=moved, resume=True,
                               log=None)
    assert [int(r["epoch"]) for r in read_log(tmp_path)] == [1]  # nothing trained, nothing recorded


def test_resume_without_checkpoint_is_an_error(tiny_root, tmp_path):
    with pytest.raises(util.DataError, match="resume"):
        training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS,
                                   optimization=tiny_optimization(tmp_path), resume=True, log=None)


def test_forward_writes_node_files_manifest_and_metrics(features, trained, tiny_root):
    out_dir, metrics = features
    built = frames.load_frames(tiny_root)
    manifest = util.read_json(out_dir / "manifest.json")
    dim = 1536 + config.TEXT["dim"]  # the three 512-d streams and the transcripts' text block
    assert manifest["feature_order"] == ["audio", "eda", "temp", "text"]
    assert manifest["feature_dims"] == {"audio": 512, "eda": 512, "temp": 512, "text": config.TEXT["dim"]}
    assert manifest["feature_dim"] == dim
    assert manifest["encoder_sha256"] == util.file_sha256(trained[0] / "best.pth")
    assert manifest["clip_length"] == 11 and manifest["spectrogram"]["n_mels"] == 16
    splits = util.session_splits()
    expected = built.gt.groupby("session")["n_samples"].sum()
    for split, sessions in manifest["splits"].items():
        assert set(sessions) <= set(splits[split])
        for session in sessions:
            path = out_dir / f"features_{split}" / f"Sess{session:02d}.pkl"
            with open(path, "rb") as fh:
                rows = pickle.load(fh)
            assert len(rows) == manifest["node_counts"][split][f"Sess{session:02d}"] == expected[session]
            sess, time_s, identity, label, target, segment_id, feature = rows[0]
            assert len(rows[0]) == len(util.NODE_COLUMNS)
            assert sess == session and segment_id.startswith(f"Sess{session:02d}_") and identity in segment_id
            assert label.dtype == np.float32 and label.shape == (7,) and label.sum() == pytest.approx(1)
            assert feature.dtype == np.float32 and feature.shape == (dim,)
            assert time_s in built.entities[segment_id][:, 0]
            assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert set(metrics) == {"test", "baselines", "decision", "splits"}
    # per split, the role its sessions played for the encoder: the in-sample gap is measured from these
    assert {name: part["encoder_saw"] for name, part in metrics["splits"].items()} == {
        "train": "train", "val": "val", "test": "none"}
    assert metrics["splits"]["test"]["node"] == metrics["test"]["node"]
    assert manifest["encoder_splits"] == {"train": list(config.SPLITS["train"]), "val": list(config.SPLITS["val"])}
    assert manifest["embedded_by"]["test"]["Sess37"] == {"encoder_sha256": manifest["encoder_sha256"],
                                                         "encoder_saw": "none"}
    assert util.read_json(out_dir / "encoder_metrics.json") == util.to_jsonable(metrics)
    test_nodes = sum(manifest["node_counts"]["test"].values())
    assert metrics["test"]["node"]["n"] == metrics["baselines"]["majority"]["node"]["n"] == test_nodes
    assert 0 < metrics["test"]["segment"]["n"] < test_nodes


def test_forward_is_deterministic_and_replaces_stale_files(features, trained, tiny_root, tmp_path):
    out_dir = tmp_path / "features"
    shutil.copytree(features[0], out_dir)
    (out_dir / "features_test" / "Sess99.pkl").write_bytes(b"stale")
    metrics = extraction.extract_features(11, "cpu", root=tiny_root, checkpoint=trained[0] / "best.pth",
                                            out_dir=out_dir, forward={"num_workers": 1, "progress": False},
                                            log=None)
    assert metrics == features[1]
    assert not (out_dir / "features_test" / "Sess99.pkl").exists()
    assert not list(out_dir.glob(".staging-*"))


def test_forward_rejects_another_clip_length(trained, tiny_root, tmp_path):
    with pytest.raises(util.DataError, match="clip_length 11"):
        extraction.extract_features(7, "cpu", root=tiny_root, checkpoint=trained[0] / "best.pth",
                                      out_dir=tmp_path, forward={"progress": False}, log=None)


def test_cli_bad_checkpoint_is_a_one_line_error(tiny_root, tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"junk")
    result = subprocess.run(
        [sys.executable, "STE_forward.py", "11", "cpu", "--root", str(tiny_root), "--checkpoint",
         str(tmp_path / "bad.pth"), "--features_dir", str(tmp_path / "features")],
        cwd=ENCODER_DIR, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "bad.pth" in result.stderr
    assert not (tmp_path / "features" / "manifest.json").exists()


def test_feature_notebook_runs_top_to_bottom(trained, tiny_root, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("KEMDY20_ROOT", str(tiny_root))
    monkeypatch.setenv("STE_CHECKPOINT", str(trained[0] / "best.pth"))
    monkeypatch.setenv("FEATURES_DIR", str(tmp_path / "features"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(ENCODER_DIR / "feats_generator.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ENCODER_DIR)}}).execute()
    assert (tmp_path / "features" / "manifest.json").is_file()
    assert "Sess" in str(notebook.cells[-2].outputs)
