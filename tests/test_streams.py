"""Bio streams as data (encoder/core/streams.py): one list drives reading, normalisation, the encoder and its
heads, extraction, online embedding and the synthetic generator, so that a third, made-up stream is one entry
(and, for synthetic data, its signal); encoders saved before the streams were data still load."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_encoder_train import TINY_INPUTS, tiny_optimization

from encoder.core import checkpoints, config, extraction, frames, kemdy20, streams, synthetic, training, util
from encoder.core.custom_transforms import Normalization, mean_std
from encoder.core.dataset import load_segments
from encoder.core.models import STEncoder
from temporal_gnn import online

pytestmark = pytest.mark.usefixtures("one_thread")

RESP = streams.BioStream("resp", "RESP", 0.05)  # made up: a respiration belt, breaths per minute
# The parameter names of the two-stream encoder before the streams were data, written out (not derived from
# the code under test): its checkpoints hold these.
OLD_MODULES = {"audio", "eda", "temp", "audio_head", "eda_head", "temp_head", "fused"}
OLD_KEYS = ("eda.stem.0.weight", "eda.blocks.7.bn2.running_var", "temp.stem.1.bias", "eda_head.fc.weight",
            "temp_head.out.bias", "audio_head.fc.weight", "fused.weight")


def resp_signal(times: np.ndarray, clock: np.ndarray, utterances: list, speaker: int, person: dict, drift: dict,
                rng: np.random.Generator) -> np.ndarray:
    """A breathing rate around the participant's own, rising while they speak: something to learn from."""
    speaking = np.zeros(len(times))
    for utt in utterances:
        if utt.speaker == speaker:
            speaking[(times >= utt.start) & (times <= utt.end)] = 1.0 + utt.state
    level = 12.0 + person["f0"] / 50.0  # 14 to 16 breaths a minute
    return np.round(level + speaking + rng.normal(0, 0.3, len(times)), 3)


@pytest.fixture(scope="module")
def three_streams() -> Iterator[None]:
    """BIO_STREAMS with RESP after EDA and TEMP, and a synthetic signal for it, for the whole module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(streams, "BIO_STREAMS", (*streams.BIO_STREAMS, RESP))
        patch.setitem(synthetic.SIGNALS, RESP.name, (resp_signal, ".3f"))
        yield


@pytest.fixture(scope="module")
def resp_root(three_streams: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset generated with the third stream, its dataframe tables built."""
    root = tmp_path_factory.mktemp("resp") / "KEMDy20"
    synthetic.make_dataset(root, preset="tiny", seed=0)
    frames.write_frames(frames.build_frames(root), root)
    return root


@pytest.fixture(scope="module")
def resp_encoder(resp_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-bio-stream encoder trained two epochs on resp_root; its training folder."""
    out_dir = tmp_path_factory.mktemp("resp_ste")
    training.train_encoder(11, "cpu", root=resp_root, inputs=TINY_INPUTS,
                           optimization={**tiny_optimization(out_dir), "keep_checkpoints": None}, log=None)
    return out_dir


def test_the_list_names_every_stream_of_the_encoder() -> None:
    assert streams.names() == ("eda", "temp") and streams.folders() == ("EDA", "TEMP")
    assert streams.feature_order() == ("audio", "eda", "temp")
    assert streams.heads(("eda",)) == ("audio", "eda", "fused")
    assert streams.stream("temp").table_file == "TEMP_aug.csv" and streams.stream("temp").value_column == "TEMP_value"
    assert frames.artifacts()[:2] == ("EDA_aug.csv", "TEMP_aug.csv")
    with pytest.raises(KeyError, match="BIO_STREAMS"):
        streams.stream("ibi")
    for name in ("audio", "fused", "Resp", "bio"):
        with pytest.raises(ValueError, match="bio stream name"):
            streams.BioStream(name, "X", 0.1)
    with pytest.raises(ValueError, match="sd_floor"):
        streams.BioStream("ibi", "IBI", 0.0)


def test_normalisation_reads_the_six_scalars_and_round_trips_any_streams() -> None:
    old = {"audio_mean": -41.5, "audio_std": 12.0, "eda_mean": 2.0, "eda_std": 0.5, "temp_mean": 33.0,
           "temp_std": 0.2}  # the serialised form of every checkpoint and record before the streams were data
    norm = Normalization.from_dict(old)
    assert norm.bio == {"eda": (2.0, 0.5), "temp": (33.0, 0.2)}
    assert list(norm.to_dict().items()) == list(old.items())  # written back key for key, in the same order
    three = Normalization(-41.5, 12.0, {"eda": (2.0, 0.5), "temp": (33.0, 0.2), "resp": (15.0, 3.0)})
    assert Normalization.from_dict(three.to_dict()) == three
    assert list(Normalization.from_dict(three.to_dict()).bio) == ["eda", "temp", "resp"]
    np.testing.assert_array_equal(three.stream("resp", np.array([18.0, 12.0])), np.array([1.0, -1.0], np.float32))
    assert Normalization.unit(("resp",)).bio == {"resp": (0.0, 1.0)}


def test_an_encoder_saved_with_the_old_parameter_names_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = STEncoder(bio_channels={"eda": 1, "temp": 1}).eval()
    old = {}
    for key, value in model.state_dict().items():
        for new, former in (("bio_heads.", "{}_head."), ("bio.", "{}.")):
            if key.startswith(new):
                name, rest = key[len(new):].split(".", 1)
                key = former.format(name) + rest
                break
        old[key] = value
    assert {key.split(".")[0] for key in old} == OLD_MODULES and set(OLD_KEYS) <= set(old)
    state = {**checkpoints.encoder_state(model, Normalization.unit(("eda", "temp")), {"clip_length": 11}),
             "model": old}
    torch.save(state, tmp_path / "old.pth")
    loaded = checkpoints.encoder_from_checkpoint(checkpoints.load_encoder_checkpoint(tmp_path / "old.pth"),
                                                 tmp_path / "old.pth").eval()
    assert loaded.feature_order == ("audio", "eda", "temp")
    inputs = (torch.randn(2, 1, 16, 44), {"eda": torch.randn(2, 1, 11), "temp": torch.randn(2, 1, 11)})
    with torch.no_grad():
        assert torch.equal(loaded(*inputs).embedding, model(*inputs).embedding)


def test_a_checkpoint_of_an_unlisted_stream_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = STEncoder(bio_channels={"eda": 1, "temp": 1})
    torch.save(checkpoints.encoder_state(model, Normalization.unit(("eda", "temp")), {"clip_length": 11}),
               tmp_path / "two.pth")
    monkeypatch.setattr(streams, "BIO_STREAMS", streams.BIO_STREAMS[:1])
    with pytest.raises(util.DataError, match="'temp'.*BIO_STREAMS"):
        checkpoints.encoder_from_checkpoint(checkpoints.load_encoder_checkpoint(tmp_path / "two.pth"),
                                            tmp_path / "two.pth")


def test_the_generator_needs_a_signal_for_every_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "BIO_STREAMS", (*streams.BIO_STREAMS, RESP))
    with pytest.raises(ValueError, match="'resp'.*synthetic.SIGNALS"):
        synthetic.make_dataset(tmp_path / "out", preset="tiny", with_wav=False)
    assert not (tmp_path / "out").exists()


def test_a_third_stream_is_written_read_and_joined(resp_root: Path) -> None:
    resp_files = kemdy20.bio_files(resp_root, "RESP")
    assert resp_files and {p.name for p in resp_files} <= {p.name for p in kemdy20.bio_files(resp_root, "EDA")} | {
        p.name for p in kemdy20.bio_files(resp_root, "TEMP")}
    lines = resp_files[0].read_text().splitlines()
    assert len(lines) > 2 and lines[2].count(",") in (1, 2) and len(lines[2].split(",")[0].split(".")[1]) == 3
    built = frames.load_frames(resp_root)
    assert list(built.bio) == ["eda", "temp", "resp"] and "RESP_value" in built.bio["resp"]
    assert (resp_root / "RESP_aug.csv").is_file()
    assert all(rows.shape[1] == 4 for rows in built.entities.values())  # ts, EDA, TEMP, RESP
    report = built.report
    assert set(report["files"]) == {"EDA", "TEMP", "RESP"} and "RESP_only" in report["join_dropped_rows"]
    assert "RESP" in frames.format_report(built)
    table = load_segments(built, resp_root)
    seg = table.by_split["train"][0]
    assert list(seg.values) == list(seg.rows) == ["eda", "temp", "resp"]
    assert seg.bio_clips(5)["resp"].shape == (seg.n_steps, 5)


def test_tables_built_for_other_streams_are_refused(resp_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "BIO_STREAMS", streams.BIO_STREAMS[:2])  # RESP taken off the list again
    with pytest.raises(util.DataError, match="EDA, TEMP, RESP.*lists EDA, TEMP: rerun"):
        frames.load_frames(resp_root)


def test_the_encoder_trains_and_extracts_a_third_stream(resp_root: Path, resp_encoder: Path,
                                                        tmp_path: Path) -> None:
    first, second = (checkpoints.load_encoder_checkpoint(resp_encoder / f"epoch_00{e}.pth") for e in (1, 2))
    norm = Normalization.from_dict(second["normalization"])
    assert list(norm.bio) == ["eda", "temp", "resp"]
    train = load_segments(frames.load_frames(resp_root), resp_root).by_split["train"]
    assert norm.bio["resp"] == pytest.approx(mean_std([s.values["resp"] for s in train]))
    assert second["feature_order"] == ["audio", "eda", "temp", "resp"]
    for module in ("bio.resp.", "bio_heads.resp."):  # its trunk and head learn
        keys = [k for k in second["model"] if k.startswith(module) and second["model"][k].is_floating_point()]
        assert keys and any(not torch.equal(first["model"][k], second["model"][k]) for k in keys)
    assert all(np.isfinite(row[f"loss_{h}"]) for row in second["log"] for h in ("resp", "fused"))

    out = tmp_path / "features"
    extraction.extract_features(11, "cpu", root=resp_root, checkpoint=resp_encoder / "best.pth", out_dir=out,
                                forward={"num_workers": 0, "progress": False}, log=None)
    manifest = util.read_json(out / extraction.MANIFEST_FILE)
    assert manifest["feature_order"][:4] == ["audio", "eda", "temp", "resp"]
    assert manifest["feature_dims"]["resp"] == 512 and manifest["feature_dim"] == 2048 + config.TEXT["dim"]
    with open(out / "features_test" / "Sess37.pkl", "rb") as fh:
        rows = pickle.load(fh)
    features = np.stack([row[-1] for row in rows])
    assert features.shape[1] == manifest["feature_dim"]
    assert np.isfinite(features[:, 1536:2048]).all() and features[:, 1536:2048].std(axis=0).max() > 0

    state = checkpoints.load_encoder_checkpoint(resp_encoder / "best.pth")
    model = checkpoints.encoder_from_checkpoint(state, resp_encoder / "best.pth")
    segment = load_segments(frames.load_frames(resp_root), resp_root, wanted=("test",)).by_split["test"][0]
    vectors = online.NodeEmbedder(model, state, torch.device("cpu")).embed([(segment, 0), (segment, 1)])
    assert vectors.shape == (2, 2048)
    first_node = next(row for row in rows if row[5] == segment.segment_id and row[1] == float(segment.ts[0]))
    np.testing.assert_allclose(vectors[0].numpy(), first_node[-1][:2048], atol=1e-4)


def test_a_two_stream_encoder_still_embeds_with_its_own_streams(resp_root: Path, resp_encoder: Path,
                                                                 tmp_path: Path) -> None:
    """An encoder trained before RESP was listed (here: of EDA and TEMP only) loads and extracts its three
    blocks from the three-stream tables."""
    recorded = checkpoints.load_encoder_checkpoint(resp_encoder / "best.pth")
    model = STEncoder(bio_channels={"eda": 1, "temp": 1})
    two = {k: v for k, v in recorded["normalization"].items() if not k.startswith("resp")}
    state: dict[str, Any] = {**checkpoints.encoder_state(model, Normalization.from_dict(two), recorded["inputs"]),
                             "splits": recorded["splits"]}
    torch.save(state, tmp_path / "two.pth")
    extraction.extract_features(11, "cpu", root=resp_root, checkpoint=tmp_path / "two.pth", out_dir=tmp_path / "f",
                                forward={"num_workers": 0, "progress": False}, log=None)
    manifest = util.read_json(tmp_path / "f" / extraction.MANIFEST_FILE)
    assert manifest["feature_order"][:3] == ["audio", "eda", "temp"] and "resp" not in manifest["feature_order"]
    assert manifest["feature_dim"] == 1536 + config.TEXT["dim"]
