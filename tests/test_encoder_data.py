"""Encoder inputs on the `tiny` preset: segments, skipping broken wavs, normalisation, datasets."""

import shutil

import numpy as np
import pytest
import torch

from encoder.core import clip_utils, config, frames, io, layout, util
from encoder.core.custom_transforms import SpectrogramParams, clip_spectrogram, mean_std
from encoder.core.dataset import (
    SegmentDataset,
    TrainClipDataset,
    compute_normalization,
    label_vector,
    load_segments,
    node_batches,
)

SMALL = SpectrogramParams(sample_rate=4000, n_fft=256, win_length=250, hop_length=250, n_mels=16, fmax=None)


@pytest.fixture(scope="module")
def tiny_frames(tiny_root):
    return frames.load_frames(tiny_root)


@pytest.fixture(scope="module")
def table(tiny_root, tiny_frames):
    return load_segments(tiny_frames, tiny_root)


def test_label_vector_is_a_normalised_multi_hot():
    assert np.allclose(label_vector("0 1 0 0 1 0 0"), [0, 0.5, 0, 0, 0.5, 0, 0])
    with pytest.raises(ValueError):
        label_vector("0 0 0 0 0 0 0")


def test_segments_follow_the_session_splits(table):
    splits = util.session_splits()
    for name, segments in table.by_split.items():
        assert segments and all(s.session in splits[name] for s in segments)
        assert all(s.label.sum() == pytest.approx(1.0) and 0 <= s.target < config.NUM_CLASSES for s in segments)
    assert not table.skipped


def test_normalisation_uses_training_sessions_only(tiny_root, tiny_frames, table):
    norm = compute_normalization(table.by_split["train"], 11, SMALL)
    train = table.by_split["train"]
    assert list(norm.bio) == ["eda", "temp"]
    for name in norm.bio:
        assert norm.bio[name] == pytest.approx(mean_std([s.values[name] for s in train]))
    # wild values in validation and test sessions change nothing
    changed = load_segments(tiny_frames, tiny_root)
    for name in ("val", "test"):
        for seg in changed.by_split[name]:
            seg.values["eda"] += 1000.0
            seg.values["temp"] -= 50.0
    assert compute_normalization(changed.by_split["train"], 11, SMALL) == norm


def test_missing_wav_is_counted_and_skipped_and_too_many_fail(tiny_raw, tmp_path):
    root = tmp_path / "KEMDy20"
    shutil.copytree(tiny_raw, root)
    before = frames.build_frames(root).dropped  # the preset has segments without joined EDA/TEMP rows
    assert set(before.values()) == {"no_joined_bio_rows"}
    gone_before = sorted((root / "wav" / "Session01").glob("*.wav"))[-1]
    gone_before.unlink()  # the dataframe stage drops this one, load_segments the two below
    built = frames.build_frames(root)
    assert built.dropped == {**before, gone_before.stem: "no_wav"}
    wavs = [layout.wav_path(root, segment_id) for segment_id in built.gt["segment_id"]]
    wavs[0].unlink()
    wavs[1].write_bytes(b"broken")
    table = load_segments(built, root)
    assert set(table.skipped) == {wavs[0].stem, wavs[1].stem}
    report = table.report()
    n_bio = len(before)
    assert report["dropped_reasons"] == {"no_joined_bio_rows": n_bio, "no_wav": 1, "wav missing": 1,
                                         "wav unreadable": 1}
    assert report["kept"] == len(built.gt) - 2 and report["dropped_by_frames"] == n_bio + 1
    assert table.summary().endswith(f"dropped {n_bio + 3} ({n_bio} no_joined_bio_rows, 1 no_wav, 1 wav missing, "
                                    "1 wav unreadable)")
    elsewhere = load_segments(built, root, sessions=[2])  # the wav deleted first was in session 1
    assert gone_before.stem not in elsewhere.unusable
    assert all(util.parse_segment_id(s)["session"] == 2 for s in elsewhere.unusable)
    kept = {s.segment_id for segs in table.by_split.values() for s in segs}
    assert wavs[0].stem not in kept and len(kept) == len(built.gt) - 2
    for path in wavs[2:20]:
        path.unlink()
    with pytest.raises(util.DataError, match="above the allowed share"):
        load_segments(built, root)


def test_training_clips_are_seeded_per_epoch(table):
    train = table.by_split["train"]
    norm = compute_normalization(train, 11, SMALL)
    data = TrainClipDataset(train, norm, 11, SMALL, seed=3)
    first = [data.step_of(i) for i in range(len(data))]
    assert first == [TrainClipDataset(train, norm, 11, SMALL, seed=3).step_of(i) for i in range(len(data))]
    data.set_epoch(1)
    assert first != [data.step_of(i) for i in range(len(data))]
    audio, bio, label, target = data[0]
    assert audio.shape == (1, 16, 44) and bio["eda"].shape == bio["temp"].shape == (1, 11) and label.shape == (7,)


def test_node_batches_cut_every_step_from_one_spectrogram_per_segment(table):
    segments = table.by_split["val"][:3]
    norm = compute_normalization(table.by_split["train"], 11, SMALL)
    dataset = SegmentDataset(segments, norm, 11, SMALL)
    batches = list(node_batches((dataset[i] for i in range(len(dataset))), 16, 11, SMALL))
    total = sum(s.n_steps for s in segments)
    assert [len(b.step) for b in batches] == [16] * (total // 16) + ([total % 16] if total % 16 else [])
    seg_index = np.concatenate([b.segment_index for b in batches])
    steps = np.concatenate([b.step for b in batches])
    audio = torch.cat([b.audio for b in batches])
    eda = torch.cat([b.bio["eda"] for b in batches])
    for k in (0, 5, total - 1):
        seg = segments[seg_index[k]]
        wav = io.read_wav(seg.wav, SMALL.sample_rate)
        # the tiny preset is on the 4 Hz grid: a node's frame offset is its step times frames_per_step
        assert seg.frame_offsets(SMALL, steps[k : k + 1])[0] == steps[k] * SMALL.frames_per_step
        own = norm.audio(clip_spectrogram(wav, int(steps[k]) * SMALL.frames_per_step, 11, SMALL))
        assert np.allclose(audio[k, 0].numpy(), own, atol=1e-4)
        expected = norm.stream("eda", clip_utils.bio_clips(seg.values["eda"], 11, np.array([steps[k]])))[0]
        assert np.allclose(eda[k, 0].numpy(), expected)


class _BlasThreads(torch.utils.data.Dataset):
    """Item: the BLAS thread counts the process that loads it runs with."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> list[int]:
        from threadpoolctl import threadpool_info

        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_loader_workers_run_one_blas_thread():
    """Without util.loader_worker_init every DataLoader worker starts NumPy's BLAS on all cores (a GPU
    machine's 14 workers x 16 threads made extraction 100x slower than its model)."""
    loader = torch.utils.data.DataLoader(_BlasThreads(), batch_size=None, num_workers=1,
                                         worker_init_fn=util.loader_worker_init)
    counts = next(iter(loader))
    assert counts and all(n == 1 for n in counts)


def test_log_mel_frames_do_not_depend_on_the_blas_thread_count():
    """Workers (one BLAS thread) and the main process (several) must give the same spectrogram."""
    from threadpoolctl import threadpool_limits

    from encoder.core.custom_transforms import log_mel_frames

    params = SpectrogramParams.from_dict(config.STE_inputs)
    wav = np.random.default_rng(3).standard_normal(params.sample_rate * 3).astype(np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        one = log_mel_frames(wav, 0, 250, params)
    with threadpool_limits(limits=2, user_api="blas"):
        two = log_mel_frames(wav, 0, 250, params)
    np.testing.assert_array_equal(one, two)
