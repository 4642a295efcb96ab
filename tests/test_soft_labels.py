"""Soft labels (STE_optimization_params["vote_weight"]): the evaluators' votes read from an annotation file
written literally, and the training target mixed from them, each worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoder.core import dataset, kemdy20, training, util

HEADER_1 = "Numb,Wav,,Segment ID,Total Evaluation,,,Eval01F,,,Eval02M,,,Eval03F,,,Eval04M,,"
HEADER_2 = " ,start,end, ,Emotion,Valence,Arousal" + ",Emotion,Valence,Arousal" * 4
ROWS = [
    # neutral 1 + 1/2, happy 1/2; the empty cell and the unknown label cast no vote
    "1,1.25,2.0,Sess01_script01_User001F_001,neutral,3.5,3.1,neutral,3,3,happy;neutral,4,3,,,,joy,4,4",
    "2,1.5,2.75,Sess01_script01_User002M_001,sad;angry,1.9,3.2,sad,2,3,sad,2,4,angry,1,3,disqust,2,3",
    "3,3.0,3.5,Sess01_script01_User001F_002,angry,1.6,4.4,,,,,,,,,,,,",  # nobody voted
]


def annotation(tmp_path: Path) -> Path:
    path = tmp_path / "Sess01_eval.csv"
    path.write_text("\n".join([HEADER_1, HEADER_2, *ROWS]) + "\n", encoding="utf-8")
    return path


def test_the_evaluators_votes_are_read_with_the_totals(tmp_path: Path) -> None:
    table = kemdy20.read_annotation(annotation(tmp_path))
    assert table["emotion_votes"].tolist() == ["1.5 0.5 0 0 0 0 0", "0 0 0 1 2 1 0", ""]
    assert table["emotion"].tolist() == ["neutral", "sad;angry", "angry"]  # the totals as before


def test_a_file_without_evaluator_columns_has_no_votes(tmp_path: Path) -> None:
    path = tmp_path / "Sess01_eval.csv"
    path.write_text("Numb,Wav,,Segment ID,Total Evaluation,,\n ,start,end, ,Emotion,Valence,Arousal\n"
                    "1,1.25,2.0,Sess01_script01_User001F_001,neutral,3.5,3.1\n", encoding="utf-8")
    assert kemdy20.read_annotation(path)["emotion_votes"].tolist() == [""]


def test_the_training_label_mixes_votes_into_the_multi_hot() -> None:
    # total neutral;happy -> (1/2, 1/2, 0, ...); votes 6 neutral, 3 happy, 1 sad -> (0.6, 0.3, 0, 0, 0.1, 0, 0)
    one_hot, votes = "1 1 0 0 0 0 0", "6 3 0 0 1 0 0"
    assert dataset.training_label(one_hot, votes, 0.0).tolist() == [0.5, 0.5, 0, 0, 0, 0, 0]
    assert dataset.training_label(one_hot, votes, 0.5) == pytest.approx([0.55, 0.4, 0, 0, 0.05, 0, 0])
    assert dataset.training_label(one_hot, votes, 1.0) == pytest.approx([0.6, 0.3, 0, 0, 0.1, 0, 0])
    assert dataset.training_label(one_hot, "", 0.5).tolist() == [0.5, 0.5, 0, 0, 0, 0, 0]  # no votes
    assert dataset.training_label(one_hot, votes, 0.5).dtype == np.float32


def test_vote_weight_is_checked_and_recorded_only_when_on() -> None:
    assert "vote_weight" not in training.LearningOptions().signature()  # records written before it stay equal
    assert training.LearningOptions.from_settings({"vote_weight": 0.3}).signature()["vote_weight"] == 0.3
    with pytest.raises(ValueError, match="vote_weight"):
        training.LearningOptions(vote_weight=1.5)


def test_soft_labels_from_frames_built_before_the_votes_are_refused(tiny_root: Path) -> None:
    from encoder.core import frames as frames_module

    built = frames_module.load_frames(tiny_root)
    built.gt = built.gt.drop(columns="emotion_votes")
    dataset.load_segments(built, tiny_root)  # the totals alone still work
    with pytest.raises(util.DataError, match="emotion_votes"):
        dataset.load_segments(built, tiny_root, vote_weight=0.5)
