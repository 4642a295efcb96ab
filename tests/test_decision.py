"""A decision fit for macro-F1 (issue 35, item 6): segment decisions argmax(log p - tau · log prior), tau chosen
on the validation segments from a grid, for the encoder (extraction), the GNN and the GRU (train_val), and
repeated by predict.py. Worked by hand on three classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from encoder.core import config, extraction, metrics
from encoder.core.metrics import adjusted_decisions, choose_decision_tau, class_prior
from temporal_gnn import gnn_training, labelling

PROBS = np.array([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]])
PRIOR = np.array([0.7, 0.2, 0.1])


def test_the_prior_is_the_add_one_smoothed_training_frequency() -> None:
    np.testing.assert_allclose(class_prior([0, 0, 0, 1], num_classes=3), [4 / 7, 2 / 7, 1 / 7])
    assert class_prior([0, 0]).shape == (config.NUM_CLASSES,)


def test_adjusted_decisions_worked_by_hand() -> None:
    assert adjusted_decisions(PROBS, PRIOR, 0.0).tolist() == [0, 0]  # the plain argmax
    # tau 0.5, row 0: log .5 - .5 log .7 = -0.515, log .3 - .5 log .2 = -0.399, log .2 - .5 log .1 = -0.458
    # row 1: -0.332, -1.498, -0.053
    assert adjusted_decisions(PROBS, PRIOR, 0.5).tolist() == [1, 2]
    # tau 1 (balanced): row 0 log(p / prior) = -0.336, 0.405, 0.693; row 1: -0.154, -0.693, 1.099
    assert adjusted_decisions(PROBS, PRIOR, 1.0).tolist() == [2, 2]


def test_tau_is_the_grids_best_on_validation_and_the_smallest_on_a_tie() -> None:
    chosen = choose_decision_tau(PROBS, [1, 2], PRIOR, (0.0, 0.5, 1.0))
    # macro-F1 over the classes present (1 and 2): tau 0 → 0, tau 0.5 → 1, tau 1 → (0 + 2/3) / 2
    assert chosen["tau"] == 0.5
    np.testing.assert_allclose(chosen["val_macro_f1"], [0.0, 1.0, 1 / 3])
    assert choose_decision_tau(PROBS, [0, 0], PRIOR, (0.25, 0.0))["tau"] == 0.0  # both 1.0: the smaller
    assert choose_decision_tau(PROBS, [1, 2], PRIOR, (1.0,))["tau"] == 1.0  # one value: that one
    with pytest.raises(ValueError, match="empty"):
        choose_decision_tau(PROBS, [1, 2], PRIOR, ())


def test_the_encoders_report_takes_the_tau_chosen_on_validation() -> None:
    """split_report: validation segments pick tau; the test decisions (and metrics) use it."""

    class Seg:
        def __init__(self, target: int):
            self.target, self.n_steps = target, 1

    train = [Seg(0)] * 8 + [Seg(1)] * 2 + [Seg(2)]
    probs7 = np.zeros((2, config.NUM_CLASSES))
    probs7[:, :3] = PROBS
    probs7 += 1e-9
    val = [(["Sess08_script01_User015F_001", "Sess08_script01_User016M_001"], np.array([1, 2]), probs7)]
    test = [(["Sess01_script01_User001F_001", "Sess01_script01_User002M_001"], np.array([1, 2]), probs7)]
    fitted = {"train": [2], "val": [8]}
    plain = extraction.split_report(train, {"val": val, "test": test}, fitted)
    assert plain["decision"]["tau"] == 0.0 and plain["test"]["segment"]["macro_f1"] == 0.0
    tuned = extraction.split_report(train, {"val": val, "test": test}, fitted, (0.0, 0.5, 1.0, 2.0))
    assert tuned["decision"]["tau"] > 0 and tuned["test"]["segment"]["macro_f1"] == 1.0
    np.testing.assert_allclose(tuned["decision"]["prior"], metrics.class_prior([s.target for s in train]))


def test_the_gnn_setting_is_checked_and_its_flag_parsed() -> None:
    assert gnn_training.GnnSettings.from_config().decision_tau_grid == tuple(config.GNN["decision_tau_grid"])
    assert gnn_training.GnnSettings.from_config({"decision_tau_grid": [0, 1]}).decision_tau_grid == (0.0, 1.0)
    for bad in ((), (-1.0,), ("a",)):
        with pytest.raises(ValueError, match="decision_tau_grid"):
            gnn_training.GnnSettings.from_config({"decision_tau_grid": bad})
    args = gnn_training.parse_args(["--decision_tau_grid", "0,0.5,1"])
    assert gnn_training.GnnSettings.from_args(args).decision_tau_grid == (0.0, 0.5, 1.0)
    with pytest.raises(SystemExit):
        gnn_training.parse_args(["--decision_tau_grid", "0,x"])


def test_train_val_decides_on_validation_and_tests_with_it() -> None:
    ids = ["Sess01_script01_User001F_001", "Sess01_script01_User002M_001"]
    val = gnn_training.evaluate({"probs": np.pad(PROBS, ((0, 0), (0, 4))), "targets": np.array([1, 2]),
                              "segment_ids": ids})
    graphs = [type("G", (), {"target": np.array(t), "segment_id": [f"Sess02_script01_User003F_{i:03d}"]})()
              for i, t in enumerate([0] * 8 + [1] * 2 + [2])]
    import torch

    for g in graphs:
        g.target = torch.tensor([int(g.target)])
    decision = gnn_training.decide(val, graphs, (0.0, 0.5, 1.0))
    assert decision["tau"] == 0.5
    test = gnn_training.evaluate({"probs": np.pad(PROBS, ((0, 0), (0, 4))), "targets": np.array([1, 2]),
                               "segment_ids": ids}, decision)
    assert test["segment"]["macro_f1"] == 1.0 and test["_segments"][2].tolist() == [1, 2]


def test_predict_writes_the_decided_class() -> None:
    ids = ["Sess01_script01_User001F_001", "Sess01_script01_User002M_001"]
    gt = pd.DataFrame({"wav_start": [0.0, 1.0], "wav_end": [1.0, 2.0], "target": [1, 2]}, index=ids)
    probs = np.pad(PROBS, ((0, 0), (0, 4)))
    prior = np.pad(PRIOR, (0, 4), constant_values=1.0)  # the four classes past the third never win
    plain = labelling.prediction_table(ids, probs, gt, [])
    decided = labelling.prediction_table(ids, probs, gt, [], decision={"tau": 0.5, "prior": prior.tolist()})
    assert plain["predicted"].tolist() == ["neutral", "neutral"]
    assert decided["predicted"].tolist() == ["happy", "surprise"]
