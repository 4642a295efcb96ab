"""temporal_gnn/late_fusion.py (benchmarks/late_fusion.py) on a two-fold CV tree written by hand: each fold's
weight is chosen on the other fold's test segments, never its own, and the pooled figures are those worked out
below."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoder.core import config, extraction, layout, metrics, util
from temporal_gnn import late_fusion

NEUTRAL, HAPPY = 0, 1
GNN = layout.gnn_folder(config.MODALITIES)

# Per fold: two segments (neutral, then happy) and the classical and partner (encoder) probabilities of
# neutral and happy. Fold 0: the classical system misses the happy segment and the encoder's 0.8 for happy
# mends it at w = 1. Fold 1: the classical system is right on both and the encoder's 0.9 for happy on the
# neutral segment spoils it at w = 1.
FOLDS = {
    0: {"classical": [(0.6, 0.4), (0.6, 0.4)], "encoder": [(0.5, 0.5), (0.2, 0.8)]},
    1: {"classical": [(0.6, 0.4), (0.4, 0.6)], "encoder": [(0.1, 0.9), (0.5, 0.5)]},
}


def write_tree(root: Path, drop_classical_of: int | None = None) -> Path:
    for k, fold in FOLDS.items():
        session = k + 1
        ids = [f"Sess{session:02d}_script01_User{2 * session - 1:03d}F_{i:03d}" for i in (1, 2)]
        targets = [NEUTRAL, HAPPY]
        folder = layout.fold_dir(root, k)
        for system, path in (("classical", folder / GNN / "predictions_test_classical.csv"),
                             ("encoder", folder / "features" / extraction.PREDICTIONS_FILE),
                             ("gnn", folder / GNN / "predictions_test.csv")):
            if system == "classical" and k == drop_classical_of:
                continue
            pairs = fold["classical" if system == "gnn" else system]
            probs = np.zeros((2, config.NUM_CLASSES))
            probs[:, :2] = pairs
            path.parent.mkdir(parents=True, exist_ok=True)
            metrics.write_segment_predictions(ids, targets, probs.argmax(axis=1), probs, path)
    return root


def test_each_folds_weight_comes_from_the_other_fold_and_the_pooled_figures_are_worked_out(tmp_path: Path) -> None:
    result = late_fusion.late_fusion(write_tree(tmp_path / "run"), grid=(0.0, 1.0), n_boot=10)
    seed = result["seeds"]["first"]
    # fold 0's weight is chosen on fold 1, where w = 0 scores 1.0 and w = 1 scores 1/3; fold 1's on fold 0,
    # where w = 1 scores 1.0 (both segments right) and w = 0 scores 1/3
    assert seed["weights"] == [0.0, 1.0]
    # pooled truth (n, h, n, h); classical (n, n, n, h): F1 neutral 4/5, happy 2/3
    assert seed["pooled"]["classical"]["macro_f1"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    # fusion: fold 0 at w = 0 (n, n), fold 1 at w = 1 (h, h): F1 1/2 for both classes
    assert seed["pooled"]["fusion"]["macro_f1"] == pytest.approx(0.5)
    # encoder alone: argmax of its own probabilities (n, h, h, n): one right per class, F1 1/2 each
    assert seed["pooled"]["encoder"]["macro_f1"] == pytest.approx(0.5)
    assert seed["fusion_minus_classical"]["macro_f1"] == pytest.approx(0.5 - (4 / 5 + 2 / 3) / 2)
    assert seed["fusion_minus_classical"]["ci95"] is None  # two sessions: below the fewest for an interval
    text = late_fusion.format_fusion(result)
    assert "-0.2333 [n/a (2 sessions)]" in text and "0, 1" in text


def test_a_fold_without_the_classical_systems_predictions_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "run", drop_classical_of=1)
    with pytest.raises(util.DataError, match="segment predictions not found") as error:
        late_fusion.late_fusion(root, grid=(0.0, 1.0), n_boot=10)
    assert "fold_1" in str(error.value)


def test_the_fusion_system_chooses_its_weight_on_the_validation_segments_and_fuses_the_test_ones() -> None:
    """fit_fusion on a context worked by hand: on validation the GNN's 0.8 for happy mends the classical system's
    miss at w = 1 (macro-F1 1 against 1/3 at w = 0), so w = 1, and the test decisions are argmax of
    log p_classical + log p_GNN."""
    from types import SimpleNamespace

    from temporal_gnn import gnn_training

    def probs(pairs: list[tuple[float, float]]) -> np.ndarray:
        out = np.zeros((len(pairs), config.NUM_CLASSES))
        out[:, :2] = pairs
        return out

    def segments(ids: list[str], targets: list[int], p: np.ndarray) -> tuple:
        return ids, np.array(targets), p.argmax(axis=1), p

    val_ids, test_ids = ["v1", "v2"], ["t1", "t2", "t3"]
    classical = gnn_training.SystemResult(
        {}, {"_segments": segments(test_ids, [NEUTRAL, HAPPY, HAPPY], probs([(0.6, 0.4), (0.55, 0.45), (0.3, 0.7)]))},
        val={"_segments": segments(val_ids, [NEUTRAL, HAPPY], probs([(0.6, 0.4), (0.6, 0.4)]))})
    # the GNN's segments come in another order: the fusion aligns them by ID
    gnn = {"val": {"_segments": segments(val_ids[::-1], [HAPPY, NEUTRAL], probs([(0.2, 0.8), (0.5, 0.5)]))},
           "test": {"_segments": segments(test_ids[::-1], [HAPPY, HAPPY, NEUTRAL],
                                          probs([(0.9, 0.1), (0.2, 0.8), (0.5, 0.5)]))}}
    lines: list[str] = []
    context = SimpleNamespace(fitted={"classical": classical}, gnn=gnn, log=lines.append,
                              settings=SimpleNamespace(fusion_weight_grid=(0.0, 1.0)))
    result = late_fusion.fit_fusion(context)
    assert result.entry["weight"] == 1.0 and result.entry["val_macro_f1"] == {"0": pytest.approx(1 / 3), "1": 1.0}
    ids, targets, decisions, fused = result.test["_segments"]
    assert ids == test_ids and targets.tolist() == [NEUTRAL, HAPPY, HAPPY]
    # t1: 0.6*0.5 > 0.4*0.5, neutral; t2: 0.55*0.2 < 0.45*0.8, happy; t3: 0.3*0.9 > 0.7*0.1, neutral
    assert decisions.tolist() == [NEUTRAL, HAPPY, NEUTRAL]
    np.testing.assert_allclose(fused[1, :2], [0.11 / (0.11 + 0.36), 0.36 / (0.11 + 0.36)], atol=1e-4)
    assert result.entry["segment"]["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert late_fusion.model_record(result) == {"weight": 1.0, "partner": "gnn"}
    # without a classical system there is nothing to fuse
    assert late_fusion.fit_fusion(SimpleNamespace(fitted={"classical": None}, gnn=gnn, log=lines.append,
                                                  settings=context.settings)) is None
    assert "not fitted" in lines[-1]
