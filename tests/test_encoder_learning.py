"""The encoder's learning options (issue 35; training.LearningOptions), each off by default: several clips
per segment per epoch, early stopping by patience, the selection criterion, the logit-adjusted loss and
SpecAugment masks. The scripted-history tests replace the epoch's training and validation so that the
selection and stopping rules run on known numbers."""

import math
import pickle

import numpy as np
import pytest
import torch

from encoder.core import checkpoints, distributed, extraction, frames, streams, training, util
from encoder.core.custom_transforms import Normalization, SpecAugment, SpectrogramParams
from encoder.core.dataset import SegmentDataset, TrainClipDataset, TrainSegmentDataset, load_segments
from encoder.core.models import EncoderOutput, STEncoder
from encoder.core.participant import InputOptions
from encoder.core.prediction import encoder_loss, logit_offset, training_prior

TINY_INPUTS = {"sample_rate": 4000, "n_fft": 256, "win_length": 250, "hop_length": 250, "n_mels": 16, "fmax": None}
SMALL = SpectrogramParams.from_dict(TINY_INPUTS)
UNIT = Normalization.unit(("eda", "temp"))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def table(tiny_root):
    return load_segments(frames.load_frames(tiny_root), tiny_root)


def optimization(out_dir, **learning):
    return {"epochs": 2, "scheduler_T_max": 2, "batch_size": 8, "num_workers": 0, "out_dir": out_dir,
            "progress": False, "val_step_stride": 2, **learning}


# --- clips_per_segment ------------------------------------------------------------------------------------

def test_k_clips_per_segment_give_k_items_per_segment_on_distinct_steps(table):
    train = table.by_split["train"]
    n = len(train)
    one = TrainClipDataset(train, UNIT, 11, SMALL, seed=3)
    three = TrainClipDataset(train, UNIT, 11, SMALL, seed=3, clips_per_segment=3)
    for data in (one, three):
        data.set_epoch(2)
    assert len(one) == n and len(three) == 3 * n
    # the first n items are the one-clip epoch's: k = 1 reproduces the original draw
    assert [three.step_of(i) for i in range(n)] == [one.step_of(i) for i in range(n)]
    for s, seg in enumerate(train):
        steps = [three.step_of(s + j * n) for j in range(3)]
        assert all(0 <= step < seg.n_steps for step in steps)
        assert len(set(steps)) == min(3, seg.n_steps)  # distinct while the segment has that many steps
    three.set_epoch(3)
    assert [three.step_of(i) for i in range(3 * n)] != [TrainClipDataset(
        train, UNIT, 11, SMALL, seed=3, clips_per_segment=3).step_of(i) for i in range(3 * n)]


def test_cached_spectrograms_give_the_same_clips_from_one_read_per_segment(table, monkeypatch):
    """cache_spectrograms: every clip of two epochs equals the uncached one bit for bit, and each segment's wav
    is read once instead of once per clip."""
    from encoder.core import dataset

    train = table.by_split["train"][:6]
    plain = TrainClipDataset(train, UNIT, 11, SMALL, seed=3, clips_per_segment=3)
    cached = TrainClipDataset(train, UNIT, 11, SMALL, seed=3, clips_per_segment=3, cache=True)
    reads: list[str] = []
    read_wav = dataset.io.read_wav
    monkeypatch.setattr(dataset.io, "read_wav", lambda path, rate: reads.append(path) or read_wav(path, rate))
    for epoch in (1, 2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            before = len(reads)
            expected = plain[i]
            assert len(reads) == before + 1
            got = cached[i]
            assert torch.equal(got[0], expected[0]) and torch.equal(got[2], expected[2])
    assert len(reads) == 2 * len(plain) + len(train)  # the uncached path's reads plus one per segment


def test_k_spans_per_segment_start_on_distinct_nodes(table):
    train = table.by_split["train"]
    n = len(train)
    options = InputOptions(11, audio_pass="segment")
    one = TrainSegmentDataset(train, UNIT, 11, SMALL, 0, options, span_steps=3)
    two = TrainSegmentDataset(train, UNIT, 11, SMALL, 0, options, span_steps=3, clips_per_segment=2)
    assert len(two) == 2 * n
    assert [two.first_step(i) for i in range(n)] == [one.first_step(i) for i in range(n)]
    long = [s for s, seg in enumerate(train) if seg.n_steps > 4]
    assert long and all(two.first_step(s) != two.first_step(s + n) for s in long)


# --- patience and select_on -------------------------------------------------------------------------------

def test_improves_on_each_criterion():
    best = {"epoch": 2, "val_macro_f1": 0.30, "val_loss": 5.0}
    assert training.improves(0.31, 9.0, best, "macro_f1") and not training.improves(0.30, 1.0, best, "macro_f1")
    assert training.improves(0.10, 4.9, best, "loss") and not training.improves(0.90, 5.0, best, "loss")
    assert training.improves(0.30, 4.9, best, "macro_f1_loss")  # a tie on macro-F1, broken by the loss
    assert not training.improves(0.30, 5.1, best, "macro_f1_loss")
    assert training.improves(0.31, 9.0, best, "macro_f1_loss") and not training.improves(0.29, 0.1, best,
                                                                                             "macro_f1_loss")
    # an old checkpoint's best has no val_loss: any finite loss is better
    assert training.improves(0.0, 1e9, {"epoch": 1, "val_macro_f1": 0.2}, "loss")
    assert training.improves(0.0, 1e9, best, "last")  # every epoch replaces the one before
    assert training.patience_spent(5, 3, 2) and not training.patience_spent(4, 3, 2)
    assert not training.patience_spent(100, 1, None)
    with pytest.raises(ValueError, match="select_on"):
        training.LearningOptions(select_on="accuracy")


# Scripted validation per epoch: (segment macro-F1, loss).
HISTORY = [(0.20, 6.0), (0.30, 5.0), (0.30, 4.0), (0.25, 4.5), (0.10, 4.8), (0.40, 3.0), (0.40, 2.0)]


def scripted_run(monkeypatch, tiny_root, out_dir, **learning):
    """Train 7 epochs whose validation follows HISTORY and whose training step does nothing; returns the
    log's epochs and best.pth's epoch."""
    def validate(*_args, **_kwargs):
        f1, loss = HISTORY[len(seen)]
        seen.append(f1)
        return {"loss": loss, "segment": {"macro_f1": f1, "accuracy": f1}, "node": {"macro_f1": f1, "accuracy": f1}}

    seen: list[float] = []
    monkeypatch.setattr(training, "validate", validate)
    monkeypatch.setattr(training, "_train_one_epoch", lambda *_a, **_k: dict.fromkeys((*streams.heads(), "total"), 1.0))
    summary = training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS, log=None,
                                     optimization={**optimization(out_dir, **learning), "epochs": 7,
                                                   "keep_checkpoints": 1})
    best = checkpoints.load_encoder_checkpoint(out_dir / "best.pth")
    assert best["epoch"] == summary["best_epoch"] and best["learning"]["select_on"] == learning.get("select_on",
                                                                                                    "macro_f1")
    return [row["epoch"] for row in summary["epochs"]], summary["best_epoch"]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`:UserWarning")  # no optimiser step
@pytest.mark.parametrize(("learning", "epochs", "best"), [
    ({}, 7, 6),  # the original: every epoch, the first strict maximum of macro-F1
    ({"patience": 2}, 4, 2),  # no better macro-F1 in epochs 3 and 4
    ({"patience": 2, "select_on": "loss"}, 5, 3),  # the loss rises in epochs 4 and 5
    ({"patience": 2, "select_on": "macro_f1_loss"}, 5, 3),  # epoch 3 ties epoch 2's macro-F1 at a lower loss
    ({"select_on": "macro_f1_loss"}, 7, 7),
    ({"select_on": "loss"}, 7, 7),
    ({"patience": 2, "select_on": "last"}, 7, 7),  # the last epoch, and patience never runs out
])
def test_patience_and_selection_on_a_scripted_history(monkeypatch, tiny_root, tmp_path, learning, epochs, best):
    ran, chosen = scripted_run(monkeypatch, tiny_root, tmp_path, **learning)
    assert ran == list(range(1, epochs + 1)) and chosen == best


# --- logit adjustment -------------------------------------------------------------------------------------

def test_logit_adjusted_loss_is_the_cross_entropy_of_logits_plus_tau_log_prior():
    prior = np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])
    label = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1.0]])
    zero = torch.zeros(2, 7)
    out = EncoderOutput(dict.fromkeys(streams.heads(), zero), torch.zeros(2, 1536))
    # zero logits, tau 1: softmax(log prior) is the prior, so each head's loss is -log prior[y], averaged
    total, per_head = encoder_loss(out, label, offset=logit_offset(prior, 1.0))
    expected = -(math.log(0.4) + math.log(0.05)) / 2
    assert all(float(v) == pytest.approx(expected, rel=1e-6) for v in per_head.values())
    assert float(total) == pytest.approx(4 * expected, rel=1e-6)
    # tau 0.5 on other logits: softmax(z + 0.5 log p)[y] = p_y^0.5 e^z_y / sum_c p_c^0.5 e^z_c
    z = torch.tensor([[2.0, 0, 0, 0, 0, 0, 1.0]]).expand(2, 7)
    out = EncoderOutput(dict.fromkeys(streams.heads(), z), torch.zeros(2, 1536))
    _, per_head = encoder_loss(out, label, offset=logit_offset(prior, 0.5))
    scores = np.sqrt(prior) * np.exp(z[0].numpy())
    expected = -(math.log(scores[0] / scores.sum()) + math.log(scores[6] / scores.sum())) / 2
    assert float(per_head["fused"]) == pytest.approx(expected, rel=1e-6)
    assert logit_offset(prior, 0.0) is None  # off: the plain loss


def test_training_prior_is_the_add_one_smoothed_label_mass():
    labels = np.array([[1, 0, 0, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
    assert training_prior(labels) == pytest.approx(np.array([3.5, 1.5, 1, 1, 1, 1, 1]) / 10)


def test_validation_loss_takes_the_offset_and_the_decision_the_plain_logits(table):
    segments = table.by_split["val"][:3]
    torch.manual_seed(0)
    model = STEncoder()
    settings = {"batch_size": 32, "num_workers": 0, "amp": False, "progress": False, "val_step_stride": 4}
    runtime = distributed.Runtime(torch.device("cpu"))
    plain = training.validate(runtime, model, segments, UNIT, 11, SMALL, settings)
    offset = logit_offset(np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05]), 1.0)
    adjusted = training.validate(runtime, model, segments, UNIT, 11, SMALL, settings, offset=offset)
    assert adjusted["loss"] != pytest.approx(plain["loss"])
    assert adjusted["segment"] == plain["segment"] and adjusted["node"] == plain["node"]


# --- SpecAugment ------------------------------------------------------------------------------------------

def test_masks_zero_the_drawn_bands_and_frames_and_nothing_else():
    augment = SpecAugment(freq_masks=2, freq_width=3, time_masks=3, time_width=5)
    spec = np.ones((16, 44), dtype=np.float32)
    masked = augment(spec, np.random.default_rng(7))
    replay = np.random.default_rng(7)
    bands, frames_ = augment.spans(replay, 16, "freq"), augment.spans(replay, 44, "time")
    assert len(bands) == 2 and len(frames_) == 3
    assert all(0 <= b - a <= 3 for a, b in bands) and all(0 <= b - a <= 5 for a, b in frames_)
    expected = np.ones_like(spec)
    for a, b in bands:
        expected[a:b] = 0
    for a, b in frames_:
        expected[:, a:b] = 0
    assert np.array_equal(masked, expected) and np.array_equal(spec, np.ones_like(spec))  # a copy, masked
    zero_bands = {int(i) for i in np.flatnonzero((masked == 0).all(axis=1))}
    assert zero_bands >= {i for a, b in bands for i in range(a, b)}
    # widths are drawn from 0 to the largest, both reached
    widths = {b - a for seed in range(200) for a, b in augment.spans(np.random.default_rng(seed), 16, "freq")}
    assert widths == {0, 1, 2, 3}
    off = SpecAugment()
    assert not off.active and off(spec, np.random.default_rng(0)) is spec


def test_masks_apply_to_training_clips_only(table):
    train, val = table.by_split["train"][:4], table.by_split["val"][:2]
    augment = SpecAugment(freq_masks=1, freq_width=4, time_masks=1, time_width=8)
    plain = TrainClipDataset(train, UNIT, 11, SMALL, seed=0)
    masked = TrainClipDataset(train, UNIT, 11, SMALL, seed=0, augment=augment)
    for i in range(len(train)):
        a, b = plain[i][0][0].numpy(), masked[i][0][0].numpy()
        kept = b != 0
        assert np.array_equal(a[kept], b[kept])  # only masked values change
        assert np.array_equal(b, augment(a, np.random.default_rng([0, 0, i, 1])))  # seeded per (epoch, item)
    assert any(not np.array_equal(plain[i][0], masked[i][0]) for i in range(len(train)))
    # evaluation datasets take no augmentation at all
    with pytest.raises(TypeError):
        SegmentDataset(val, UNIT, 11, SMALL, augment=augment)


# --- all options through a real training ------------------------------------------------------------------

def test_a_training_with_every_option_records_them_and_draws_k_clips(monkeypatch, tiny_root, tmp_path):
    drawn: list[tuple[int, int]] = []
    masked: list[int] = []
    original_item, original_mask = TrainClipDataset.__getitem__, SpecAugment.__call__

    def item(self, index):
        drawn.append((self.epoch, index))
        return original_item(self, index)

    def mask(self, spec, rng, bands=None):
        masked.append(1)
        return original_mask(self, spec, rng, bands)

    monkeypatch.setattr(TrainClipDataset, "__getitem__", item)
    monkeypatch.setattr(SpecAugment, "__call__", mask)
    learning = {"clips_per_segment": 2, "patience": 5, "select_on": "macro_f1_loss", "logit_adjust_tau": 1.0,
                "spec_augment": {"freq_masks": 1, "freq_width": 2, "time_masks": 1, "time_width": 4},
                "vote_weight": 0.5}
    messages: list[str] = []
    summary = training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS,
                                     optimization=optimization(tmp_path, **learning), log=messages.append)
    n = summary["segments"]["segments"]["train"]
    for epoch in (1, 2):  # k x the items, each once, less the last incomplete batch (drop_last)
        items = [i for e, i in drawn if e == epoch]
        assert len(set(items)) == len(items) == 2 * n - 2 * n % 8 and max(items) < 2 * n
    assert len(masked) == len(drawn)  # a mask per training item, none in validation
    state = checkpoints.load_encoder_checkpoint(tmp_path / "best.pth")
    recorded = util.read_json(tmp_path / training.CONFIG_NAME)["learning"]
    assert state["learning"] == recorded
    assert {k: recorded[k] for k in learning} == learning
    soft = load_segments(frames.load_frames(tiny_root), tiny_root, vote_weight=0.5)
    hard = load_segments(frames.load_frames(tiny_root), tiny_root)
    assert recorded["prior"] == pytest.approx(list(training_prior(np.stack([s.label for s in soft.by_split["train"]]))))
    assert recorded["prior"] != pytest.approx(list(training_prior(np.stack([s.label for s in hard.by_split["train"]]))))
    # the node files carry the targets the encoder trained on: its soft labels, not the multi-hot
    extraction.extract_features(11, "cpu", root=tiny_root, checkpoint=tmp_path / "best.pth",
                                out_dir=tmp_path / "features", forward={"num_workers": 0, "progress": False}, log=None)
    label_of = {s.segment_id: s.label for split in soft.by_split.values() for s in split}
    nodes = pickle.loads(next((tmp_path / "features" / "features_train").glob("*.pkl")).read_bytes())
    assert nodes and all(np.array_equal(node[3], label_of[node[5]]) for node in nodes)
    assert any("learning options" in m and "'clips_per_segment': 2" in m for m in messages)
    # resuming with options that train otherwise is refused; a longer patience is not such an option
    with pytest.raises(util.DataError, match="other learning options"):
        training.train_encoder(11, "cpu", root=tiny_root, inputs=TINY_INPUTS, resume=True, log=None,
                               optimization=optimization(tmp_path, **{**learning, "logit_adjust_tau": 0.0}))


def test_a_checkpoint_without_learning_options_reads_as_all_off():
    assert training.LearningOptions.from_settings({}) == training.LearningOptions()
    assert training.LearningOptions.from_settings({}).signature() == {
        "clips_per_segment": 1, "patience": None, "select_on": "macro_f1", "logit_adjust_tau": 0.0,
        "spec_augment": {"freq_masks": 0, "freq_width": 0, "time_masks": 0, "time_width": 0}}


def test_run_pipeline_flags_set_the_encoders_training_and_name_the_folders():
    """--encoder_epochs (with the cosine period), --clips_per_segment and --encoder_select_on override the
    profile's values and tag the experiment's name; a value equal to the profile's changes and names nothing."""
    from encoder.core import config
    from temporal_gnn import pipeline_run

    args = pipeline_run.parse_args(["--encoder_epochs", "25", "--clips_per_segment", "4",
                                    "--encoder_select_on", "last"])
    settings, tags = pipeline_run.with_learning_options(config.DEMO, args)
    assert tags == ["e25", "c4", "sellast"]
    assert settings["STE_optimization_params"] == {**config.DEMO["STE_optimization_params"], "epochs": 25,
                                                   "scheduler_T_max": 25, "clips_per_segment": 4,
                                                   "select_on": "last"}
    assert settings["STE_inputs"] is config.DEMO["STE_inputs"]  # nothing else touched
    demo_epochs = config.DEMO["STE_optimization_params"]["epochs"]
    same = pipeline_run.parse_args(["--encoder_epochs", str(demo_epochs), "--clips_per_segment", "1",
                                    "--encoder_select_on", "macro_f1"])
    assert pipeline_run.with_learning_options(config.DEMO, same) == (config.DEMO, [])
    # the full profile's own values are config.STE_optimization_params'
    full, tags = pipeline_run.with_learning_options(pipeline_run.NO_OVERRIDES, pipeline_run.parse_args(
        ["--encoder_epochs", str(config.STE_optimization_params["epochs"]), "--encoder_select_on", "loss"]))
    assert tags == ["selloss"] and full["STE_optimization_params"] == {"select_on": "loss"}
    for bad in (["--encoder_epochs", "0"], ["--clips_per_segment", "0"], ["--encoder_select_on", "best"]):
        with pytest.raises(SystemExit):
            pipeline_run.parse_args(bad)
