"""Encoder input options (encoder/core/participant.py): per-participant normalisation computed from that
participant's own signal only (offline: the whole session; online: what has arrived), a bio clip length
of its own, the NeuroKit2 EDA components, and a checkpoint that carries the options to extraction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from encoder.core import checkpoints, extraction, frames, io, participant, streams, training, util
from encoder.core.custom_transforms import Normalization, SpectrogramParams, clip_spectrogram, segment_spectrogram
from encoder.core.dataset import (
    CausalSegmentDataset,
    SegmentDataset,
    TrainClipDataset,
    load_segments,
    segment_clips,
)
from encoder.core.models import STEncoder
from encoder.core.participant import InputOptions
from temporal_gnn import online

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = SpectrogramParams(sample_rate=8000, n_fft=256, win_length=200, hop_length=200, n_mels=32, fmax=4000.0)
UNIT = Normalization.unit(("eda", "temp"))
ALL_ON = InputOptions(bio_clip_length=41, participant_norm=True, eda_components=True)
CONTOUR = replace(SMALL, contour=True)  # with the contour rows (contours.py), whose F0 row has no value unvoiced


@pytest.fixture(scope="module")
def session(tiny_root: Path) -> list:
    """The segments of one session of the tiny preset (two participants)."""
    table = load_segments(frames.load_frames(tiny_root), tiny_root, {"x": (1,)}, wanted=("x",))
    return table.by_split["x"]


def fresh(segments: list) -> list:
    return [replace(s, participant=None, eda_parts=None, spectrogram=None) for s in segments]


def with_eda(segment: Any, values: np.ndarray, rows: np.ndarray) -> Any:
    """`segment` with other EDA node values and rows."""
    return replace(segment, values={**segment.values, "eda": values}, rows={**segment.rows, "eda": rows})


def test_participant_statistics_are_that_participants_own(session: list) -> None:
    segments = fresh(session)
    participant.attach(segments, SMALL, ALL_ON)
    groups = participant.by_participant(segments)
    assert len(groups) == 2
    for group in groups.values():
        eda = np.concatenate([s.rows["eda"][:, 1] for s in group])  # the tiny preset repeats no timestamp
        temp = np.concatenate([s.rows["temp"][:, 1] for s in group])
        frames_ = np.concatenate([participant.wav_frames(io.read_wav(s.wav, SMALL.sample_rate), SMALL) for s in group])
        stats = group[0].participant
        assert all(s.participant is stats for s in group)
        # a flat non-responder's sd is its sensor's resolution (the stream's sd floor)
        assert stats.bio["eda"] == pytest.approx((eda.mean(), max(eda.std(), streams.stream("eda").sd_floor)))
        assert stats.bio["temp"] == pytest.approx((temp.mean(), max(temp.std(), streams.stream("temp").sd_floor)))
        np.testing.assert_allclose(stats.mel_mean, frames_.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(stats.mel_std, np.maximum(frames_.std(axis=0), participant.MEL_STD_FLOOR),
                                   rtol=1e-5)
    # the other participant's signal changed tenfold: this participant's statistics and inputs unchanged
    first, other = list(groups)
    changed = fresh(session)
    for seg in changed:
        if participant.participant_key(seg) == other:
            seg.rows = {"eda": seg.rows["eda"] * [1.0, 10.0], "temp": seg.rows["temp"] + [0.0, 5.0]}
    participant.attach(changed, SMALL, ALL_ON)
    mine = [s for s in changed if participant.participant_key(s) == first]
    before = [s for s in segments if participant.participant_key(s) == first]
    assert mine[0].participant.bio["eda"] == before[0].participant.bio["eda"]
    for a, b in zip(mine, before, strict=True):
        steps = np.arange(a.n_steps)
        x, y = participant.bio_inputs(a, steps, UNIT, ALL_ON), participant.bio_inputs(b, steps, UNIT, ALL_ON)
        assert list(x) == list(y) == ["eda", "temp"]
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])
    assert [s for s in changed if participant.participant_key(s) == other][0].participant.bio["eda"][0] != (
        pytest.approx([s for s in segments if participant.participant_key(s) == other][0].participant.bio["eda"][0]))


def test_participant_norm_removes_a_participants_offset_and_scale(session: list) -> None:
    """Two copies of one participant's segments, one with EDA × 3 + 2: standardised, the clips agree. The
    participant's EDA is first scaled to sd 1, above the sd floor (a flat non-responder's sd is floored, and
    then the scaled copy would not standardise to the same values)."""
    group = max(participant.by_participant(fresh(session)).values(),
                key=lambda g: np.concatenate([s.rows["eda"][:, 1] for s in g]).std())
    sd = np.concatenate([s.rows["eda"][:, 1] for s in group]).std()
    assert sd > 0
    group = [with_eda(s, s.values["eda"] / sd, s.rows["eda"] * [1.0, 1.0 / sd]) for s in group]
    shifted = [replace(with_eda(s, s.values["eda"] * 3.0 + 2.0, s.rows["eda"] * [1.0, 3.0] + [0.0, 2.0]),
                       identity="Other") for s in group]
    options = InputOptions(11, participant_norm=True)
    participant.attach([*group, *shifted], SMALL, options)
    for a, b in zip(group, shifted, strict=True):
        steps = np.arange(a.n_steps)
        np.testing.assert_allclose(participant.bio_inputs(a, steps, UNIT, options)["eda"],
                                   participant.bio_inputs(b, steps, UNIT, options)["eda"], atol=1e-5)
        np.testing.assert_allclose(participant.node_values(a, options)["eda"],
                                   participant.node_values(b, options)["eda"], atol=1e-9)


def constant(seg: Any, eda: float, temp: float) -> Any:
    """`seg` with every EDA and TEMP row and node value at one level."""
    level = {"eda": eda, "temp": temp}
    return replace(seg, values={k: np.full_like(v, level[k]) for k, v in seg.values.items()},
                   rows={k: np.c_[v[:, 0], np.full(len(v), level[k])] for k, v in seg.rows.items()})


def constant_pair(session: list) -> list:
    """A participant's first two segments, EDA 1 and 3 µS, TEMP 30 and 34 °C."""
    first, second = next(iter(participant.by_participant(fresh(session)).values()))[:2]
    return [constant(first, 1.0, 30.0), constant(second, 3.0, 34.0)]


def test_participant_norm_of_a_two_segment_participant_by_hand(session: list) -> None:
    """A participant of two segments, EDA 1 µS on all n_a rows of the first and 3 µS on all n_b rows of the
    second (TEMP 30 and 34 °C). Over the participant's n = n_a + n_b rows: mean (n_a + 3 n_b) / n and sd
    (ddof=0, the signal's own spread) 2 sqrt(n_a n_b) / n, so the first segment's values standardise to
    -sqrt(n_b / n_a) and the second's to +sqrt(n_a / n_b); likewise TEMP. Audio: each mel bin minus its
    mean over both wavs' frames, over its sd."""
    pair = constant_pair(session)
    n_a, n_b = len(pair[0].rows["eda"]), len(pair[1].rows["eda"])
    assert not set(pair[0].rows["eda"][:, 0]) & set(pair[1].rows["eda"][:, 0])  # no row counted once for both
    assert len(pair[0].rows["temp"]) == n_a and len(pair[1].rows["temp"]) == n_b
    options = InputOptions(11, participant_norm=True)
    participant.attach(pair, SMALL, options)
    stats = pair[0].participant
    n, spread = n_a + n_b, np.sqrt(n_a * n_b)
    assert stats.bio["eda"] == pytest.approx(((n_a + 3 * n_b) / n, 2 * spread / n))
    assert stats.bio["temp"] == pytest.approx(((30 * n_a + 34 * n_b) / n, 4 * spread / n))
    for seg, expected in zip(pair, (-np.sqrt(n_b / n_a), np.sqrt(n_a / n_b)), strict=True):
        steps = np.arange(seg.n_steps)
        inputs, raw = participant.bio_inputs(seg, steps, UNIT, options), seg.bio_clips(11, steps)
        assert np.isin(raw["eda"], [1.0, 3.0]).all() and np.isin(raw["temp"], [30.0, 34.0]).all()
        for name, node in participant.node_values(seg, options).items():
            np.testing.assert_allclose(inputs[name][:, 0], np.full(raw[name].shape, expected), rtol=1e-5)
            np.testing.assert_allclose(node, expected)
    frames_ = [participant.wav_frames(io.read_wav(s.wav, SMALL.sample_rate), SMALL) for s in pair]
    both = np.concatenate(frames_)
    spec = frames_[0].T
    np.testing.assert_allclose(participant.audio_input(pair[0], spec, UNIT, options),
                               (spec - both.mean(axis=0)[:, None]) / both.std(axis=0)[:, None], rtol=1e-4, atol=1e-4)


def test_bio_norm_standardises_the_bio_streams_alone(session: list) -> None:
    """bio_norm: the two-segment participant's bio inputs standardise as under participant_norm (first segment
    -sqrt(n_b / n_a), second +sqrt(n_a / n_b)), while the spectrogram keeps the training-set normalisation only
    (mean 1, sd 2 here) and no audio statistics are gathered."""
    pair = constant_pair(session)
    n_a, n_b = len(pair[0].rows["eda"]), len(pair[1].rows["eda"])
    options = InputOptions(11, bio_norm=True)
    assert options.needs_participant and options.bio_statistics and not options.audio_statistics
    participant.attach(pair, SMALL, options)
    assert pair[0].participant.mel_mean is None
    for seg, expected in zip(pair, (-np.sqrt(n_b / n_a), np.sqrt(n_a / n_b)), strict=True):
        inputs = participant.bio_inputs(seg, np.arange(seg.n_steps), UNIT, options)
        for name in ("eda", "temp"):
            np.testing.assert_allclose(inputs[name][:, 0], expected, rtol=1e-5)
            np.testing.assert_allclose(participant.node_values(seg, options)[name], expected)
    spec = np.array([[3.0, 5.0], [7.0, 9.0]], dtype=np.float32)
    np.testing.assert_allclose(participant.audio_input(pair[0], spec, Normalization(1.0, 2.0), options),
                               [[1.0, 2.0], [3.0, 4.0]])
    assert options.signature()["bio_norm"] is True and "bio_norm" not in InputOptions(11).signature()
    assert InputOptions.from_inputs({"clip_length": 11, "bio_norm": True}) == options


def test_options_off_change_nothing(session: list) -> None:
    """Without options the datasets give exactly the old inputs: each stream's normalised raw clips."""
    norm = Normalization(-20.0, 10.0, {"eda": (2.0, 0.5), "temp": (33.0, 0.2)})
    item = SegmentDataset(session[:1], norm, 11, SMALL)[0]
    for name, clips in session[0].bio_clips(11).items():
        np.testing.assert_array_equal(item["bio"][name].numpy(), ((clips - norm.bio[name][0]) / norm.bio[name][1])
                                      .astype(np.float32)[:, None])
    assert session[0].participant is None


def test_bio_clip_length_is_apart_from_the_audio_clip(session: list) -> None:
    segments = fresh(session[:3])
    participant.attach(segments, SMALL, ALL_ON)
    item = SegmentDataset(segments, UNIT, 11, SMALL, options=ALL_ON)[0]
    n = segments[0].n_steps
    assert item["bio"]["eda"].shape == (n, 4, 41) and item["bio"]["temp"].shape == (n, 1, 41)
    wav = io.read_wav(segments[0].wav, SMALL.sample_rate)
    offsets = segments[0].frame_offsets(SMALL)
    assert item["spec"].shape == segment_spectrogram(wav, int(offsets[-1]), 11, SMALL).shape  # audio: 11 steps
    clip = TrainClipDataset(segments, UNIT, 11, SMALL, seed=0, options=ALL_ON)[0]
    assert clip[0].shape == (1, SMALL.n_mels, 11 * SMALL.frames_per_step)
    assert clip[1]["eda"].shape == (4, 41) and clip[1]["temp"].shape == (1, 41)
    model = STEncoder(bio_channels=ALL_ON.bio_channels(("eda", "temp"))).eval()
    with torch.no_grad():
        out = model(clip[0][None].repeat(2, 1, 1, 1), {k: v[None].repeat(2, 1, 1) for k, v in clip[1].items()})
    assert out.embedding.shape == (2, 1536)


def test_eda_components_find_a_planted_response() -> None:
    t = np.arange(0, 90, 0.25)
    rise = np.clip((t - 40) / 2.0, 0, 1) * np.exp(-np.clip(t - 42, 0, None) / 6.0)  # one SCR at 40-42 s
    values = 5.0 + 0.01 * t + 0.8 * rise
    parts = participant.eda_components(values)
    assert parts.shape == (len(t), 3)
    assert np.abs(parts[:80, 0] - values[:80]).max() < 0.02  # before the response the tonic part is the series
    assert 39 < t[np.argmax(parts[:, 1])] < 46  # the phasic part peaks with the response
    peaks = np.flatnonzero(parts[:, 2])
    assert len(peaks) >= 1 and np.all((t[peaks] > 39) & (t[peaks] < 46)) and parts[peaks, 2].max() > 0.2
    short = participant.eda_components(values[:5])
    np.testing.assert_array_equal(short, np.c_[values[:5], np.zeros((5, 2))])


def test_online_statistics_use_only_what_has_arrived(session: list) -> None:
    """A node's online input is unchanged when the participant's later rows change, and at a
    participant's last node its statistics equal the offline (whole-session) ones."""
    group = next(iter(participant.by_participant(fresh(session)).values()))
    tracker = participant.OnlineParticipants(SMALL, ALL_ON, 11)
    altered = participant.OnlineParticipants(SMALL, ALL_ON, 11)
    seg = group[0]
    step = 2
    horizon = seg.ts[step] + (ALL_ON.bio_clip_length // 2) * 0.25
    eda, temp = seg.rows["eda"], seg.rows["temp"]
    later = replace(seg, rows={"eda": np.where(eda[:, :1] > horizon, eda * [1, 50], eda),
                               "temp": np.where(temp[:, :1] > horizon, temp + [0, 9], temp)})
    wav = io.read_wav(seg.wav, SMALL.sample_rate)
    steps = np.array([step])
    a = tracker.view(seg, step, wav)
    b = altered.view(later, step, wav)
    x, y = participant.bio_inputs(a, steps, UNIT, ALL_ON), participant.bio_inputs(b, steps, UNIT, ALL_ON)
    for name in x:
        np.testing.assert_array_equal(x[name], y[name])
    assert a.participant.bio["eda"][0] == pytest.approx(eda[eda[:, 0] <= horizon, 1].mean())
    # replayed to the end, the last node sees the whole participant: the offline statistics
    replay = participant.OnlineParticipants(SMALL, ALL_ON, 11)
    for s in group:
        w = io.read_wav(s.wav, SMALL.sample_rate)
        for k in range(s.n_steps):
            last = replay.view(s, k, w)
    offline = fresh(group)
    participant.attach(offline, SMALL, ALL_ON)
    for name, moments in offline[0].participant.bio.items():
        assert last.participant.bio[name] == pytest.approx(moments)
    # a second replay through the same tracker would see the whole session from its first node
    with pytest.raises(ValueError, match="arrives again"):
        replay.view(group[0], 0, io.read_wav(group[0].wav, SMALL.sample_rate))


@pytest.mark.parametrize(("inputs", "has_streams"), [
    ({**SMALL.to_dict(), "bio_clip_length": 21, "participant_norm": True, "eda_components": True},
     lambda model: model.bio["eda"].stem[0].in_channels == 4),
    ({**CONTOUR.to_dict(), "participant_norm": True}, lambda model: model.contour_channels == 3),
], ids=["all", "contour"])
def test_checkpoint_carries_the_options_to_extraction_and_online(tiny_root: Path, tmp_path: Path, inputs: dict,
                                                                 has_streams: Any) -> None:
    """The options a checkpoint records build its streams (`has_streams`: the model has them) and reach the
    feature manifest and the online embedder; with contour rows, whose unvoiced F0 is NaN, everything is finite."""
    splits = {"train": (1,), "val": (33,), "test": (37,)}
    with util.torch_threads(1):
        training.train_encoder(root=tiny_root, inputs=inputs, splits=splits,
                               optimization={"epochs": 1, "batch_size": 16, "num_workers": 0, "progress": False,
                                             "out_dir": tmp_path / "ste"}, log=None)
        state = checkpoints.load_encoder_checkpoint(tmp_path / "ste" / "best.pth")
        assert {k: state["inputs"][k] for k in inputs} == inputs
        norm = Normalization.from_dict(state["normalization"])
        assert np.isfinite([norm.audio_mean, norm.audio_std]).all()
        model = checkpoints.encoder_from_checkpoint(state, tmp_path / "ste" / "best.pth")
        assert has_streams(model)
        extraction.extract_features(root=tiny_root, checkpoint=tmp_path / "ste" / "best.pth", splits=splits,
                                    out_dir=tmp_path / "features", log=None)
        manifest = util.read_json(tmp_path / "features" / extraction.MANIFEST_FILE)
        assert manifest["spectrogram"] == SpectrogramParams.from_dict(inputs).to_dict()
        table = load_segments(frames.load_frames(tiny_root), tiny_root, {"x": (37,)}, wanted=("x",))
        embedder = online.NodeEmbedder(model.eval(), state, torch.device("cpu"))
        segment = table.by_split["x"][0]
        vectors = embedder.embed([(segment, 0), (segment, 1)])
        assert vectors.shape == (2, 1536) and np.isfinite(vectors).all()


def test_run_pipeline_flags_set_the_options_and_name_the_folders() -> None:
    from encoder.core import config
    from temporal_gnn import pipeline_run

    assert not config.STE_inputs["participant_norm"] and not config.STE_inputs["eda_components"]  # the defaults
    args = pipeline_run.parse_args(["--bio_clip_length", "41", "--participant_norm", "--eda_components"])
    settings, tag = pipeline_run.with_input_options(config.DEMO, args)
    assert tag == ["bio41", "pnorm", "edac"]
    assert {k: settings["STE_inputs"][k] for k in ("bio_clip_length", "participant_norm", "eda_components")} == {
        "bio_clip_length": 41, "participant_norm": True, "eda_components": True}
    assert settings["STE_inputs"]["n_mels"] == config.DEMO["STE_inputs"]["n_mels"]  # the profile's own kept
    assert pipeline_run.with_input_options(config.DEMO, pipeline_run.parse_args([])) == (config.DEMO, [])
    # an option given at its default value changes nothing, names nothing
    same = pipeline_run.parse_args(["--no-participant_norm", "--no-eda_components"])
    assert pipeline_run.with_input_options(config.DEMO, same) == (config.DEMO, [])
    settings, tag = pipeline_run.with_input_options(config.DEMO, pipeline_run.parse_args(["--bio_norm"]))
    assert tag == ["bnorm"] and settings["STE_inputs"]["bio_norm"] is True


@pytest.mark.parametrize(("options", "count", "params"), [
    (InputOptions(21, participant_norm=True), None, SMALL), (ALL_ON, 4, SMALL),
    (InputOptions(11, participant_norm=True), 4, CONTOUR), (InputOptions(11, contour_norm=True), 4, CONTOUR),
    (InputOptions(11, bio_norm=True), None, SMALL)],
    ids=["pnorm", "all", "pnorm-contour", "cnorm-contour", "bnorm"])
def test_causal_extraction_inputs_are_the_online_embedders(session: list, options: InputOptions,
                                                           count: int | None, params: SpectrogramParams) -> None:
    """Every node input of CausalSegmentDataset (batch extraction of a causal model's features) equals what
    online.NodeEmbedder feeds the encoder for that node (participant.OnlineParticipants in arrival order,
    the clip's own spectrogram); the whole-session inputs of SegmentDataset differ early in the session.
    With the EDA components (NeuroKit2 once per node) on `count` segments of the session only."""
    segments = fresh(session)[:count]
    causal = CausalSegmentDataset(segments, UNIT, 11, params, options=options)
    items = {segments[i].segment_id: causal[i] for i in reversed(range(len(causal)))}  # order must not matter
    tracker = participant.OnlineParticipants(params, options, 11)
    wavs = {s.segment_id: io.read_wav(s.wav, params.sample_rate) for s in segments}
    largest = 0.0
    for arrived in online.instants(segments):
        for seg, step in arrived:
            seen = tracker.view(seg, step, wavs[seg.segment_id])
            offset = int(seg.frame_offsets(params, np.array([step]))[0])
            spec = participant.audio_input(seen, clip_spectrogram(wavs[seg.segment_id], offset, 11, params), UNIT,
                                           options)
            bio = participant.bio_inputs(seen, np.array([step]), UNIT, options)
            item = items[seg.segment_id]
            for got, want in ((item["clips"][step, 0], spec), (item["bio"]["eda"][step], bio["eda"][0]),
                              (item["bio"]["temp"][step], bio["temp"][0])):
                np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)
    whole = fresh(session)[:count]
    participant.attach(whole, params, options)
    offline = SegmentDataset(whole, UNIT, 11, params, options=options)
    for i in range(len(offline)):
        online_item, offline_clips = items[whole[i].segment_id], segment_clips(offline[i], 11, params)
        largest = max(largest, float((offline[i]["bio"]["eda"] - online_item["bio"]["eda"]).abs().max()),
                      float((offline_clips - online_item["clips"]).abs().max()))
    assert largest > 0.1  # whole-session statistics are not what the online embedder reads


def test_causal_dataset_is_the_plain_one_without_participant_options(session: list) -> None:
    options = InputOptions(11)
    segments = fresh(session)
    plain, causal = SegmentDataset(segments, UNIT, 11, SMALL, options=options), CausalSegmentDataset(
        segments, UNIT, 11, SMALL, options=options)
    for key, value in plain[0].items():
        if key == "bio":
            assert all(torch.equal(clips, causal[0]["bio"][name]) for name, clips in value.items())
        else:
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(causal[0][key]))


def test_eda_components_decompose_each_run_apart() -> None:
    """Two recordings of one participant, flat at 2 and 6 µS, 60 s apart: glued end to end the step at the
    join is filtered into a skin conductance response; decomposed run by run there is none."""
    ts = np.r_[np.arange(0, 40, 0.25), np.arange(100, 140, 0.25)]
    values = np.where(ts < 50, 2.0, 6.0) + 0.001 * np.sin(ts)
    join = int(np.searchsorted(ts, 100))
    glued = participant.eda_components(values)
    assert glued[join - 4:join + 20, 2].max() > 1.0  # what the joins did: a 4 µS "response" at the join
    parts = participant.eda_components(values, ts)
    assert parts[:, 2].max() < 0.01 and np.abs(parts[:, 1]).max() < 0.01  # only the 0.001 µS ripple
    assert np.abs(parts[:, 0] - values).max() < 0.05
    np.testing.assert_array_equal(participant.eda_components(values[:30], ts[:30]),
                                  participant.eda_components(values[:30]))  # one run: as before
    assert [(r.start, r.stop) for r in participant.runs(ts)] == [(0, join), (join, len(ts))]
    with pytest.raises(ValueError, match="timestamps"):
        participant.eda_components(values, ts[:-1])


def test_a_flat_participant_gets_floored_sd_and_clipped_inputs(session: list) -> None:
    """A non-responder's EDA flat at 3 µS but for one 0.005 µS blip (half the E4's resolution), and a
    TEMP that jumps once by 5 °C: the sds are floored at the streams' sd floors, so the blip stays a fraction of an
    sd, and every z-score is within ±Z_CLIP, offline and at the first online node."""
    group = next(iter(participant.by_participant(fresh(session)).values()))
    flat = []
    for k, seg in enumerate(group):
        eda_rows, temp_rows = seg.rows["eda"].copy(), seg.rows["temp"].copy()
        eda_rows[:, 1] = 3.0
        temp_rows[:, 1] = 33.0
        if k == 0:
            eda_rows[3, 1] = 3.005
            temp_rows[3, 1] = 38.0
        flat.append(replace(seg, rows={"eda": eda_rows, "temp": temp_rows},
                            values={"eda": np.interp(seg.ts, eda_rows[:, 0], eda_rows[:, 1]),
                                    "temp": np.interp(seg.ts, temp_rows[:, 0], temp_rows[:, 1])}))
    options = InputOptions(11, participant_norm=True)
    participant.attach(flat, SMALL, options)
    stats = flat[0].participant
    assert stats.bio["eda"][1] == streams.stream("eda").sd_floor
    assert (stats.mel_std >= participant.MEL_STD_FLOOR).all()
    inputs = participant.bio_inputs(flat[0], np.arange(flat[0].n_steps), UNIT, options)
    assert 0 < np.abs(inputs["eda"]).max() <= 0.5  # the blip: half the floor, where 1e-6 made it dozens of sds
    assert np.abs(inputs["temp"]).max() == pytest.approx(participant.Z_CLIP)
    assert np.abs(participant.node_values(flat[0], options)["temp"]).max() <= participant.Z_CLIP
    tracker = participant.OnlineParticipants(SMALL, options, 11)
    seen = tracker.view(flat[0], 0, io.read_wav(flat[0].wav, SMALL.sample_rate))
    assert seen.participant.bio["eda"][1] == streams.stream("eda").sd_floor
    assert seen.participant.bio["temp"][1] >= streams.stream("temp").sd_floor
    assert np.abs(participant.bio_inputs(seen, np.array([0]), UNIT, options)["temp"]).max() <= participant.Z_CLIP


def test_one_log_mel_pass_gives_the_statistics_and_the_spectrograms_the_encoder_reads(session: list) -> None:
    """attach with the clip length takes the participant's audio statistics and every segment's
    spectrogram from one pass over each wav: the statistics those of the whole wavs' frames, the
    dataset's items the ones it computes from the wav itself, and nothing kept after release."""
    clip_length = 11
    plain, kept = fresh(session), fresh(session)
    participant.attach(plain, SMALL, ALL_ON)
    participant.attach(kept, SMALL, ALL_ON, clip_length, keep_spectrograms=True)
    for a, b in zip(plain, kept, strict=True):
        np.testing.assert_allclose(b.participant.mel_mean, a.participant.mel_mean, rtol=1e-6)
        np.testing.assert_allclose(b.participant.mel_std, a.participant.mel_std, rtol=1e-5)
        wav = io.read_wav(b.wav, SMALL.sample_rate)
        whole = segment_spectrogram(wav, int(b.frame_offsets(SMALL)[-1]), clip_length, SMALL)
        assert b.spectrogram.shape == whole.shape
        np.testing.assert_allclose(b.spectrogram, whole, atol=1e-3)
    computed = fresh(kept)
    for seg, stats in zip(computed, kept, strict=True):
        seg.participant, seg.eda_parts = stats.participant, stats.eda_parts
    assert all(s.spectrogram is None for s in computed)
    for stride in (1, 3):  # a validation stride ends the spectrogram at its own last node's clip
        ours, theirs = (SegmentDataset(segs, UNIT, clip_length, SMALL, stride, ALL_ON) for segs in (kept, computed))
        for i in range(len(kept)):
            item, expected = ours[i], theirs[i]
            assert item["spec"].shape == expected["spec"].shape
            torch.testing.assert_close(item["spec"], expected["spec"], atol=1e-3, rtol=0)
            torch.testing.assert_close(item["bio"], expected["bio"])
    participant.release_spectrograms(kept)
    assert all(s.spectrogram is None for s in kept)
