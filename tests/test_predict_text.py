"""The text block end to end on the `tiny` preset: extraction (text block fitted on the training
transcripts, appended to every node) -> graphs -> train_val --modalities audio,text -> the model folder
-> predict.py --model on test session 37, with and without its transcripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from encoder.core import config, extraction, frames, text, util
from temporal_gnn import gnn_model, graph_building, labelling, model_folder
from tests.test_predict import (
    PROBS,
    SESSION,
    copy_session,
    predict_in_process,
    tiny_encoder,
    tiny_features,
    tiny_gnns,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Encoder (1 epoch) -> features with the text block -> graphs -> a GNN reading audio and text and
    one with the default modalities (2 epochs each)."""
    work = tmp_path_factory.mktemp("predict_text")
    tiny_encoder(tiny_root, work)
    tiny_features(tiny_root, work)
    tiny_gnns(work, {"text": ["--modalities", "audio,text"], "plain": []})
    return {"work": work, "features": work / "features", "text": work / "results" / "text",
            "plain": work / "results" / "plain"}


def test_features_carry_the_text_block(models: dict[str, Path], tiny_root: Path) -> None:
    manifest = util.read_json(models["features"] / extraction.MANIFEST_FILE)
    record = manifest["text"]
    assert manifest["feature_order"] == ["audio", "eda", "temp", "text"]
    assert manifest["feature_dims"]["text"] == config.TEXT["dim"] == record["dim"]
    assert manifest["feature_dim"] == 1536 + config.TEXT["dim"]
    assert record["built"] and record["fitted_on_sessions"] == [1, 2]  # the tiny preset's training sessions
    assert util.file_sha256(models["features"] / text.FILE) == record["sha256"]
    block = text.TextBlock.load(models["features"] / text.FILE)
    gt = frames.load_frames(tiny_root).gt.set_index("segment_id")
    nodes = graph_building.read_nodes(models["features"] / "features_test" / f"Sess{SESSION}.pkl",
                                      manifest["feature_dim"])
    first = {s: i for i, s in reversed(list(enumerate(nodes["segment_id"])))}
    expected = block.transform([gt.loc[s, "transcript"] for s in first])
    np.testing.assert_array_equal(nodes["feature"][list(first.values()), 1536:], expected)


def test_gnn_reads_text_only_when_asked(models: dict[str, Path]) -> None:
    text_gnn, _ = gnn_model.load_checkpoint(models["text"] / "best.pth")
    plain_gnn, _ = gnn_model.load_checkpoint(models["plain"] / "best.pth")
    assert text_gnn.modalities == ("audio", "text")
    assert plain_gnn.modalities == ("audio", "eda", "temp")
    folder = models["text"] / model_folder.FOLDER
    spec = util.read_json(folder / model_folder.MANIFEST)
    assert spec["text"]["file"] == text.FILE and spec["feature_dims"]["text"] == config.TEXT["dim"]
    assert util.file_sha256(folder / text.FILE) == spec["text"]["sha256"]


def test_predict_with_transcripts(models: dict[str, Path], tiny_raw: Path, tmp_path: Path) -> None:
    session = copy_session(tiny_raw, tmp_path / "with_text")
    out = tmp_path / "pred.csv"
    printed = predict_in_process("--model", models["text"], "--session", session, "--out", out)
    assert "predicted" in printed and "without transcript" not in printed
    table = pd.read_csv(out, keep_default_na=False)
    predicted = table[table["predicted"] != ""]
    assert len(predicted) > 0
    np.testing.assert_allclose(predicted[PROBS].to_numpy(dtype=float).sum(axis=1), 1, atol=1e-5)
    # the same segments as train_val's own test predictions, with the same probabilities
    ours = predicted.set_index("segment_id")[PROBS].astype(float)
    theirs = pd.read_csv(models["text"] / "predictions_test.csv").set_index("segment_id")
    theirs = theirs.loc[[i for i in theirs.index if i.startswith(f"Sess{SESSION}_")]]
    assert sorted(ours.index) == sorted(theirs.index)
    columns = [c for c in theirs.columns if c.startswith("p_")]
    np.testing.assert_allclose(ours.loc[theirs.index].to_numpy(), theirs[columns].to_numpy(), atol=1e-4)


def test_predict_without_transcripts(models: dict[str, Path], tiny_raw: Path, tmp_path: Path) -> None:
    session = copy_session(tiny_raw, tmp_path / "no_text")
    for path in (session / "wav").rglob("*.txt"):
        path.unlink()
    out = tmp_path / "pred.csv"
    result = subprocess.run([sys.executable, "predict.py", "--num_workers", "0", "--device", "cpu", "--model",
                             str(models["text"]), "--session", str(session), "--out", str(out)],
                            cwd=config.REPO_ROOT, capture_output=True, text=True, timeout=180,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(config.REPO_ROOT)})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # besides tqdm's bars
    assert len(errors) == 1 and errors[0].startswith(f"error: {session}: the model reads the text block, but none")
    assert not out.exists()
    # a GNN that does not read the block needs no transcript: its text columns are NaN and never read
    printed = predict_in_process("--model", models["plain"], "--session", session, "--out", out)
    table = pd.read_csv(out, keep_default_na=False)
    assert "predicted" in printed and (table["predicted"] != "").any()
    assert np.isfinite(table.loc[table["predicted"] != "", PROBS].to_numpy(dtype=float)).all()


def test_predict_with_some_transcripts_missing(models: dict[str, Path], tiny_raw: Path, tmp_path: Path) -> None:
    session = copy_session(tiny_raw, tmp_path / "some_text")
    txts = sorted((session / "wav").rglob("*.txt"))
    txts[0].unlink()
    out = tmp_path / "pred.csv"
    printed = predict_in_process("--model", models["text"], "--session", session, "--out", out)
    assert "note: 1 segments without transcript" in printed
    for path in txts[1:]:
        path.unlink()
    with pytest.raises(util.DataError, match="none of the"):
        predict_in_process("--model", models["text"], "--session", session, "--out", out)


def test_nan_text_columns_never_reach_a_plain_gnn(models: dict[str, Path]) -> None:
    gnn, _ = gnn_model.load_checkpoint(models["plain"] / "best.pth")
    x = torch.randn(5, sum(gnn.feature_dims.values()))
    x[:, 1536:] = float("nan")
    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    logits = gnn.eval()(x, edges, torch.ones(4))
    assert torch.isfinite(logits).all()
    assert extraction.appended_columns([], {}) is None  # features without text block: nothing appended


def test_online_embeddings_get_the_text_columns() -> None:
    """--online: the replay's embedder is wrapped so that each node's embedding ends with its text columns."""

    class Embedder:
        released: list[str] = []

        def embed(self, nodes: list) -> torch.Tensor:
            return torch.zeros(len(nodes), 3)

        def release(self, segment_id: str) -> None:
            self.released.append(segment_id)

    class Seg:
        def __init__(self, segment_id: str):
            self.segment_id = segment_id

    inner = Embedder()
    columns = {"a": np.array([1, 2], dtype=np.float32), "b": np.array([3, 4], dtype=np.float32)}
    wrapped = labelling._WithColumns(inner, columns)
    out = wrapped.embed([(Seg("a"), 0), (Seg("b"), 0), (Seg("a"), 1)])
    assert out.tolist() == [[0, 0, 0, 1, 2], [0, 0, 0, 3, 4], [0, 0, 0, 1, 2]]
    wrapped.release("a")
    assert inner.released == ["a"]


def test_appended_columns_in_feature_order() -> None:
    """The columns after the encoder's, as extraction and prediction both assemble them: the blocks in
    `dims` order, the text vector and a per-segment block broadcast over the steps beside a per-node one,
    NaN for a block that is not given; node_columns picks each node's row."""

    class Seg:
        def __init__(self, segment_id: str, n_steps: int):
            self.segment_id, self.n_steps = segment_id, n_steps

    class Block:
        name = "ssl"

        def columns(self, segments: list) -> dict[str, np.ndarray]:
            return {s.segment_id: np.arange(2 * s.n_steps, dtype=np.float32).reshape(s.n_steps, 2) for s in segments}

    segments = [Seg("a", 3), Seg("b", 2)]
    vectors = {"a": np.array([1, 2], dtype=np.float32), "b": np.array([3, 4], dtype=np.float32)}
    columns = extraction.appended_columns(segments, {text.NAME: 2, "lm": 1, "ssl": 2}, vectors, [Block()])
    assert columns["a"].shape == (3, 5) and columns["b"].shape == (2, 5)
    np.testing.assert_array_equal(columns["a"][:, :2], [[1, 2]] * 3)
    assert np.isnan(columns["a"][:, 2]).all() and np.isnan(columns["b"][:, 2]).all()
    np.testing.assert_array_equal(columns["b"][:, 3:], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(extraction.node_columns(columns, [("b", 1), ("a", 0)]),
                                  [[3, 4, np.nan, 2, 3], [1, 2, np.nan, 0, 1]])
    only_text = extraction.appended_columns(segments, {text.NAME: 2}, vectors)
    assert only_text["a"].shape == (2,)  # one vector per segment: kept as [dim]
    nan_text = extraction.appended_columns(segments, {text.NAME: 2})
    assert nan_text["b"].dtype == np.float32 and np.isnan(nan_text["b"]).all()
