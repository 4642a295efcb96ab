"""The pretrained `lm` and `ssl` blocks (encoder/core/pretrained.py) end to end on the `tiny` preset, with
tiny randomly initialised `transformers` models saved to temporary folders (nothing is downloaded): a
BERT with a WordPiece vocabulary of the preset's transcript characters, and a wav2vec2 with a 8 kHz
feature extractor. Extraction -> graphs -> train_val --modalities audio,ssl,lm -> predict.py --model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from encoder.core import config, extraction, frames, io, pretrained, util
from encoder.core.dataset import load_segments
from temporal_gnn import gnn_model, graph_building, model_folder
from tests.test_predict import (
    PROBS,
    SESSION,
    copy_session,
    predict_in_process,
    tiny_encoder,
    tiny_features,
    tiny_gnns,
)

HIDDEN = 32
SPEECH_RATE = 8000  # the feature extractor's sampling_rate; the tiny preset's wavs are resampled to it

pytestmark = pytest.mark.usefixtures("one_thread")


def make_text_model(folder: Path, transcripts: list[str]) -> Path:
    """A 2-layer BERT (hidden 32) and a WordPiece tokenizer whose vocabulary is every character of
    `transcripts` (as a word start and as a continuation), saved with save_pretrained."""
    import transformers

    chars = sorted({c for t in transcripts for c in t if not c.isspace()})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    tokenizer = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=False)
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=160))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_speech_model(folder: Path) -> Path:
    """A 2-layer wav2vec2 (hidden 32, two conv layers: stride 20 samples, receptive field 45) and its
    feature extractor at 8 kHz, saved with save_pretrained."""
    import transformers

    torch.manual_seed(0)
    model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=8))
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=SPEECH_RATE).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Model folders -> encoder (1 epoch) -> features with the lm and ssl blocks (speech forward passes
    counted) -> graphs -> a GNN reading audio, ssl and lm (2 epochs)."""
    import transformers

    work = tmp_path_factory.mktemp("pretrained")
    gt = frames.load_frames(tiny_root).gt
    lm = make_text_model(work / "lm", [t for t in gt["transcript"] if isinstance(t, str)])
    ssl = make_speech_model(work / "ssl")
    tiny_encoder(tiny_root, work)
    calls: list[int] = []
    forward = transformers.Wav2Vec2Model.forward

    def counted(self: torch.nn.Module, input_values: torch.Tensor, *args: object, **kwargs: object) -> object:
        calls.append(int(input_values.shape[0]))
        return forward(self, input_values, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transformers.Wav2Vec2Model, "forward", counted)
        tiny_features(tiny_root, work, pretrained={"text_model": lm, "speech_model": ssl})
    tiny_gnns(work, {"pre": ["--modalities", "audio,ssl,lm"]})
    return {"work": work, "features": work / "features", "results": work / "results" / "pre", "lm": lm, "ssl": ssl,
            "calls": calls}


def test_manifest_records_the_blocks(models: dict, tiny_root: Path) -> None:
    manifest = util.read_json(models["features"] / extraction.MANIFEST_FILE)
    assert manifest["feature_order"] == ["audio", "eda", "temp", "text", "lm", "ssl"]
    assert manifest["feature_dims"]["lm"] == manifest["feature_dims"]["ssl"] == HIDDEN
    assert manifest["feature_dim"] == 1536 + config.TEXT["dim"] + 2 * HIDDEN
    segments = sum(manifest["segments"]["segments"].values())
    for name, folder in (("lm", models["lm"]), ("ssl", models["ssl"])):
        record = manifest["pretrained"][name]
        assert record["folder"] == str(folder.resolve()) and record["sha256"] == pretrained.folder_sha256(folder)
        assert record["hidden_size"] == HIDDEN and "mean" in record["pooling"]
    # one speech forward pass per segment, each over one whole wav
    assert len(models["calls"]) == segments == manifest["pretrained"]["ssl"]["forward_passes"]
    assert set(models["calls"]) == {1}
    assert manifest["pretrained"]["ssl"]["frame_stride_s"] == 20 / SPEECH_RATE


def test_ssl_and_lm_columns_by_hand(models: dict, tiny_root: Path) -> None:
    """One node's ssl columns = the mean of the frames inside its clip window, computed here from one
    forward pass; its lm columns = the attention-mask mean of the transcript's last hidden states."""
    import transformers

    manifest = util.read_json(models["features"] / extraction.MANIFEST_FILE)
    nodes = graph_building.read_nodes(models["features"] / "features_test" / f"Sess{SESSION}.pkl",
                                      manifest["feature_dim"])
    table = load_segments(frames.load_frames(tiny_root), tiny_root, wanted=("test",))
    seg = next(s for s in table.by_split["test"] if s.n_steps >= 8)
    step = seg.n_steps // 2
    row = np.flatnonzero((nodes["segment_id"] == seg.segment_id) & (nodes["time_s"] == seg.ts[step]))[0]
    extractor = transformers.AutoFeatureExtractor.from_pretrained(models["ssl"], local_files_only=True)
    model = transformers.AutoModel.from_pretrained(models["ssl"], local_files_only=True).eval()
    wav = io.read_wav(seg.wav, SPEECH_RATE)
    with torch.no_grad():
        hidden = model(extractor(wav, sampling_rate=SPEECH_RATE, return_tensors="pt")["input_values"])
    frames_ = hidden.last_hidden_state[0].numpy()
    start = seg.ts[step] - seg.origin - 5 * 0.25  # clip_length 11: 5 steps before the node, 2.75 s long
    inside = [k for k in range(len(frames_)) if start <= (k * 20 + 22) / SPEECH_RATE < start + 2.75]
    assert 100 < len(inside) <= 2.75 * SPEECH_RATE / 20
    np.testing.assert_allclose(nodes["feature"][row, -HIDDEN:], frames_[inside].mean(axis=0), atol=1e-4)

    tokenizer = transformers.AutoTokenizer.from_pretrained(models["lm"], local_files_only=True)
    lm = transformers.AutoModel.from_pretrained(models["lm"], local_files_only=True).eval()
    tokens = tokenizer(seg.transcript or "", return_tensors="pt", truncation=True, max_length=128)
    assert tokenizer.unk_token_id not in tokens["input_ids"][0].tolist()
    with torch.no_grad():
        expected = lm(**tokens).last_hidden_state[0].mean(dim=0).numpy()
    np.testing.assert_allclose(nodes["feature"][row, -2 * HIDDEN : -HIDDEN], expected, atol=1e-4)


def test_gnn_and_predict_through_the_blocks(models: dict, tiny_raw: Path, tmp_path: Path) -> None:
    gnn, _ = gnn_model.load_checkpoint(models["results"] / "best.pth")
    assert gnn.modalities == ("audio", "lm", "ssl")
    spec = util.read_json(models["results"] / model_folder.FOLDER / model_folder.MANIFEST)
    assert spec["pretrained"]["ssl"]["sha256"] == pretrained.folder_sha256(models["ssl"])
    assert spec["pretrained"]["lm"]["folder"] == str(models["lm"].resolve())
    session = copy_session(tiny_raw, tmp_path / "session")
    out = tmp_path / "pred.csv"
    assert "predicted" in predict_in_process("--model", models["results"], "--session", session, "--out", out)
    table = pd.read_csv(out, keep_default_na=False)
    ours = table[table["predicted"] != ""].set_index("segment_id")[PROBS].astype(float)
    theirs = pd.read_csv(models["results"] / "predictions_test.csv").set_index("segment_id")
    theirs = theirs.loc[[i for i in theirs.index if i.startswith(f"Sess{SESSION}_")]]
    assert sorted(ours.index) == sorted(theirs.index)
    columns = [c for c in theirs.columns if c.startswith("p_")]
    np.testing.assert_allclose(ours.loc[theirs.index].to_numpy(), theirs[columns].to_numpy(), atol=1e-4)


def test_predict_refuses_another_folder(models: dict, tiny_raw: Path, tmp_path: Path) -> None:
    other = tmp_path / "ssl_other"
    shutil.copytree(models["ssl"], other)
    config_file = other / "preprocessor_config.json"
    config_file.write_text(config_file.read_text() + "\n")
    session = copy_session(tiny_raw, tmp_path / "session")
    recorded, actual = pretrained.folder_sha256(models["ssl"]), pretrained.folder_sha256(other)
    with pytest.raises(util.DataError) as err:
        predict_in_process("--model", models["results"], "--session", session, "--out", tmp_path / "p.csv",
                           "--speech_model", other)
    message = str(err.value)
    assert "\n" not in message and str(other) in message and recorded in message and actual in message
    assert not (tmp_path / "p.csv").exists()


def test_missing_or_wrong_folder(tmp_path: Path) -> None:
    with pytest.raises(util.DataError, match="text model folder not found") as err:
        pretrained.load_blocks({**config.PRETRAINED, "text_model": tmp_path / "nowhere"}, "cpu", 11)
    assert str(tmp_path / "nowhere") in str(err.value)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    with pytest.raises(util.DataError, match="no config.json"):
        pretrained.SpeechModel(wrong)
    (wrong / "config.json").write_text("{}")
    with pytest.raises(util.DataError, match="cannot load") as err:
        pretrained.SpeechModel(wrong)
    assert str(wrong) in str(err.value) and "\n" not in str(err.value)


def test_window_means_and_geometry() -> None:
    assert pretrained.conv_geometry((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) == (320, 400)  # wav2vec2: 20/25 ms
    frames_ = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 2), dtype=np.float32)
    times = np.arange(10) * 0.1
    means = pretrained.window_means(frames_, times, np.array([0.15, -1.0, 5.0]), np.array([0.45, 0.05, 6.0]))
    np.testing.assert_allclose(means[:, 0], [3.0, 0.0, 9.0])  # frames 2-4; frame 0; none: the nearest, 9
