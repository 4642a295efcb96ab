"""The segment audio pass: the ResNet18 trunk once over a segment's spectrogram, each node's audio vector
averaged over its clip window (models.py), in training, extraction and the per-clip (causal) path."""

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_encoder_train import TINY_INPUTS, tiny_optimization

from encoder.core import checkpoints, extraction, frames, io, layout, participant, training
from encoder.core.custom_transforms import Normalization, SpectrogramParams, segment_spectrogram
from encoder.core.dataset import CausalSegmentDataset, TrainSegmentDataset, collate_segments, load_segments
from encoder.core.models import (
    TRUNK_STRIDE,
    STEncoder,
    inference_model,
    segment_audio_map,
    window_pool,
)
from encoder.core.participant import InputOptions

pytestmark = pytest.mark.usefixtures("one_thread")
SEGMENT_INPUTS = {**TINY_INPUTS, "audio_pass": "segment"}


def test_window_pool_weighs_each_position_by_its_overlap_with_the_window():
    # positions of 32 frames: [0, 32), [32, 64), [64, 96), [96, 128), [128, 160)
    weights = window_pool(torch.tensor([0, 25]), 110, 5)
    expected = torch.tensor([[32, 32, 32, 14, 0], [7, 32, 32, 32, 7]], dtype=torch.float32) / 110
    assert torch.allclose(weights, expected, atol=1e-7)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2))


def test_segment_and_clip_models_share_their_weights():
    clip, segment = STEncoder(audio_pass="clip"), STEncoder(audio_pass="segment")
    assert list(clip.state_dict()) == list(segment.state_dict())
    segment.load_state_dict(clip.state_dict())
    with pytest.raises(ValueError, match="audio_pass"):
        STEncoder(audio_pass="frames")


def test_chunks_tile_the_segment_and_keep_its_ends_padded_as_one_pass():
    """With a context that reaches both ends of the segment, every chunk sees the whole segment, so the
    chunked map must equal the one-pass map exactly: the cores are cut and joined at the right positions."""
    torch.manual_seed(0)
    model = STEncoder(audio_pass="segment").eval()
    spec = torch.randn(1, 1, 16, 600)
    with torch.no_grad():
        whole = segment_audio_map(model, spec, 1024, 256)
        chunked = segment_audio_map(model, spec, 64 + 2 * 608, 608)  # cores of 64 frames, 10 chunks
        short_context = segment_audio_map(model, spec, 256, 64)
    assert whole.shape == chunked.shape == short_context.shape == (512, 19)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert not torch.allclose(whole, short_context, atol=1e-3)  # context shorter than the receptive field
    with pytest.raises(ValueError, match="multiple"):
        segment_audio_map(model, spec, 300, 100)


def test_a_clip_of_a_segment_model_is_its_window_of_the_trunk_output():
    """The per-clip path of a segment-pass model (causal extraction, online) and the segment path over a
    segment that is exactly that clip give the same vector."""
    torch.manual_seed(1)
    model = STEncoder(audio_pass="segment").eval()
    clip = torch.randn(3, 1, 16, 44)
    with torch.no_grad():
        per_clip = model.clip_vectors(clip)
        by_segment = torch.stack([window_pool(torch.tensor([0]), 44, 2)[0] @ segment_audio_map(model, c[None], 2048,
                                                                                                256).T for c in clip])
        folded = inference_model(model).clip_vectors(clip)
    assert torch.allclose(per_clip, by_segment, atol=1e-5)
    assert torch.allclose(per_clip, folded, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_segments(tiny_root):
    table = load_segments(frames.load_frames(tiny_root), tiny_root)
    return table.by_split["train"][:6]


def test_training_items_are_spans_of_consecutive_nodes_each_segment_weighted_once(tiny_segments):
    params = SpectrogramParams.from_dict({**TINY_INPUTS, "clip_length": 11, "fmin": 20.0})
    width, per_step = params.clip_frames(11), params.frames_per_step
    options = InputOptions(11, audio_pass="segment")
    dataset = TrainSegmentDataset(tiny_segments, Normalization.unit(("eda", "temp")), 11, params, seed=0,
                                  options=options, span_steps=3)
    items = [dataset[i] for i in range(len(dataset))]
    for seg, item in zip(tiny_segments, items, strict=True):
        offsets = item["offsets"].numpy()
        assert len(offsets) == min(3, seg.n_steps) == item["bio"]["eda"].shape[0] == item["bio"]["temp"].shape[0]
        assert offsets[0] == 0 and offsets[-1] + width == item["spec"].shape[1]  # first clip start to last clip end
        assert (np.diff(offsets) == per_step).all()  # consecutive nodes of the 4 Hz grid
        # the span's spectrogram is computed alone, frame for frame the whole segment's under those nodes
        whole = segment_spectrogram(io.read_wav(seg.wav, params.sample_rate), int(seg.frame_offsets(params)[-1]), 11,
                                    params)
        first = int(seg.frame_offsets(params)[int(item["steps"][0])])
        assert np.allclose(item["spec"].numpy(), whole[:, first : first + item["spec"].shape[1]], atol=1e-5)
    batch = collate_segments(items)
    n = sum(len(item["offsets"]) for item in items)
    assert batch["spec"].shape[0] == len(items) and batch["pool"].shape[0] == n
    assert batch["pool"].shape[1] == len(items) * -(-batch["spec"].shape[-1] // TRUNK_STRIDE)
    assert torch.allclose(batch["pool"].sum(dim=1), torch.ones(n))
    assert float(batch["weight"].sum()) == pytest.approx(1.0)
    first = len(items[0]["offsets"])
    assert float(batch["weight"][:first].sum()) == pytest.approx(1 / len(items))
    assert torch.equal(batch["label"][0], items[0]["label"])
    moved = []
    for epoch in range(1, 4):
        dataset.set_epoch(epoch)
        moved += [not torch.equal(dataset[i]["spec"], items[i]["spec"]) for i in range(len(items))]
    assert any(moved)
    with pytest.raises(ValueError, match="span_steps"):
        TrainSegmentDataset(tiny_segments, Normalization.unit(("eda", "temp")), 11, params, 0, options, span_steps=0)


@pytest.fixture(scope="module")
def segment_encoder(tiny_root, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ste_segment")
    summary = training.train_encoder(11, "cpu", root=tiny_root, inputs=SEGMENT_INPUTS,
                                     optimization=tiny_optimization(out_dir, epochs=1), log=None)
    return out_dir, summary


def test_extraction_pools_each_node_from_one_trunk_pass_over_its_segment(segment_encoder, tiny_root, tmp_path):
    out_dir, summary = segment_encoder
    assert summary["best_epoch"] == 1
    state = checkpoints.load_encoder_checkpoint(out_dir / "best.pth")
    assert state["inputs"]["audio_pass"] == "segment"
    extraction.extract_features(11, "cpu", root=tiny_root, checkpoint=out_dir / "best.pth", out_dir=tmp_path,
                                forward={"num_workers": 0, "progress": False}, log=None)
    manifest = (tmp_path / extraction.MANIFEST_FILE).read_text()
    assert '"audio_pass": "segment"' in manifest
    model = checkpoints.encoder_from_checkpoint(state, out_dir / "best.pth").eval()
    norm = Normalization.from_dict(state["normalization"])
    params = SpectrogramParams.from_dict(state["inputs"])
    seg = load_segments(frames.load_frames(tiny_root), tiny_root).by_split["test"][0]
    offsets = seg.frame_offsets(params)
    spec = norm.audio(segment_spectrogram(io.read_wav(seg.wav, params.sample_rate), int(offsets[-1]), 11, params))
    with torch.no_grad():
        positions = segment_audio_map(model, torch.from_numpy(spec)[None, None], 2048, 256)
        expected = window_pool(torch.from_numpy(offsets), params.clip_frames(11), positions.shape[1]) @ positions.T
    with open(layout.node_file(tmp_path, "test", seg.session), "rb") as fh:
        rows = [r for r in pickle.load(fh) if r[5] == seg.segment_id]
    by_time = {round(r[1], 3): r[6][:512] for r in rows}
    written = np.stack([by_time[round(float(t), 3)] for t in seg.ts])
    assert np.allclose(written, expected.numpy(), atol=1e-4)


def test_a_causal_segment_pass_node_sees_only_its_own_clip(segment_encoder, tiny_root):
    """Causal datasets of a segment-pass model carry each node's own clip even with no participant option
    on, so a causal feature never reads the segment's audio after the node's clip end."""
    out_dir, _ = segment_encoder
    state = checkpoints.load_encoder_checkpoint(out_dir / "best.pth")
    params = SpectrogramParams.from_dict(state["inputs"])
    options = InputOptions.from_inputs(state["inputs"])
    assert options.segment_pass and not options.needs_participant
    seg = load_segments(frames.load_frames(tiny_root), tiny_root).by_split["test"][0]
    norm = Normalization.from_dict(state["normalization"])
    item = CausalSegmentDataset([seg], norm, 11, params, options)[0]
    assert item["clips"].shape == (seg.n_steps, 1, params.n_mels, params.clip_frames(11))
    model = checkpoints.encoder_from_checkpoint(state, out_dir / "best.pth").eval()
    from encoder.core.prediction import embed_segments

    pred = embed_segments(inference_model(model), state, [seg], forward={"num_workers": 0, "progress": False},
                          causal=True)
    with torch.no_grad():
        expected = model.clip_vectors(item["clips"])
    assert np.allclose(pred.features[:, :512], expected.numpy(), atol=1e-4)
    offline = embed_segments(inference_model(model), state, [seg], forward={"num_workers": 0, "progress": False})
    assert not np.allclose(offline.features[:, :512], pred.features[:, :512], atol=1e-3)


def test_old_checkpoints_read_as_the_clip_pass():
    options = InputOptions.from_inputs({"clip_length": 11})
    assert options.audio_pass == "clip" and not options.segment_pass
    assert replace(options, audio_pass="segment").signature()["audio_pass"] == "segment"
    assert participant.InputOptions.from_inputs({"clip_length": 11, "audio_pass": "segment"}).segment_pass
