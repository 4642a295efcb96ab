"""The KEMDy20 readers and the dataframe stage on a small hand-written dataset in the real format.

Every file below is written literally, as it looks in a KEMDy20 download (docs/kemdy20.md), and every
expected value was worked out by hand from these literals.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from encoder.core import frames, kemdy20, util

HEADER_1 = (
    "Numb,Wav,,Segment ID,Total Evaluation,,,Eval01F,,,Eval02M,,,Eval03F,,,Eval04M,,,Eval05F,,,"
    "Eval06M,,,Eval07F,,,Eval08M,,,Eval09F,,,Eval10M,,"
)
HEADER_2 = " ,start,end, ,Emotion,Valence,Arousal" + ",Emotion,Valence,Arousal" * 10

ANNOTATION = "\n".join([
    HEADER_1,
    HEADER_2,
    "1,1.25,2.0,Sess01_script01_User001F_001,neutral;happy,3.5,3.1,"
    "neutral,3,3,happy,4,3,neutral,3,3,happy,4,4,neutral,3,3,happy,4,3,neutral,3,3,happy,4,3,neutral,4,3,happy,4,3",
    "2,1.5,2.75,Sess01_script01_User002M_001,disqust,1.9,3.2,"
    "disqust,2,3,disqust,2,4,disqust,1,3,neutral,3,3,disqust,2,3,disqust,2,3,sad,2,3,disqust,2,3,disqust,2,4,"
    "disqust,1,3",
    "3,3.0,3.5,Sess01_script01_User001F_002,angry,1.6,4.4,"
    "angry,1,5,angry,2,4,angry,2,4,angry,1,5,angry,2,4,fear,2,5,angry,2,4,angry,1,4,angry,2,5,angry,1,4",
    "4,0.5,1.5,Sess01_script02_User002M_001,sad,1.8,2.0,"
    "sad,2,2,sad,2,2,sad,1,2,sad,2,2,neutral,3,2,sad,2,2,sad,2,2,sad,2,2,sad,1,2,sad,1,2",
]) + "\n"

PREAMBLE = "1598009337.000000\n4.000000\n"

EDA_S1_F = PREAMBLE + """\
0.500000,2020-0821-1128-57-000
0.512300,2020-0821-1128-57-250,Sess01_script01_User001F_001
0.513400,2020-0821-1128-57-500,Sess01_script01_User001F_001
0.521000,2020-0821-1128-57-750,Sess01_script01_User001F_001
0.530000,2020-0821-1128-58-000
0.541000,2020-0821-1128-58-250,Sess01_script01_User001F_002
0.552000,2020-0821-1128-58-500,Sess01_script01_User001F_002
0.563000,2020-0821-1128-58-750
"""
# No row at 57-500 (the EDA row of segment F_001 there has no TEMP partner); the 58-750 row is
# inside F_002 for TEMP but outside any segment for EDA (a TEMP-only row).
TEMP_S1_F = PREAMBLE + """\
33.10,2020-0821-1128-57-000
33.11,2020-0821-1128-57-250,Sess01_script01_User001F_001
33.13,2020-0821-1128-57-750,Sess01_script01_User001F_001
33.14,2020-0821-1128-58-000
33.15,2020-0821-1128-58-250,Sess01_script01_User001F_002
33.16,2020-0821-1128-58-500,Sess01_script01_User001F_002
33.17,2020-0821-1128-58-750,Sess01_script01_User001F_002
"""
EDA_S1_M = PREAMBLE + """\
2.100000,2020-0821-1128-57-000
2.110000,2020-0821-1128-57-250
2.120000,2020-0821-1128-57-500,Sess01_script01_User002M_001
2.130000,2020-0821-1128-57-750,Sess01_script01_User002M_001
2.140000,2020-0821-1128-58-000,Sess01_script01_User002M_001
2.150000,2020-0821-1128-58-250
"""
TEMP_S1_M = PREAMBLE + """\
35.21,2020-0821-1128-57-250
35.22,2020-0821-1128-57-500,Sess01_script01_User002M_001
35.23,2020-0821-1128-57-750,Sess01_script01_User002M_001
35.24,2020-0821-1128-58-000,Sess01_script01_User002M_001
35.25,2020-0821-1128-58-250
"""
# User002M has EDA for script 2 but no TEMP file: segment Sess01_script02_User002M_001 has no joined rows.
EDA_S2_M = PREAMBLE + """\
2.500000,2020-0821-1135-00-000
2.600000,2020-0821-1135-00-250,Sess01_script02_User002M_001
2.700000,2020-0821-1135-00-500,Sess01_script02_User002M_001
2.800000,2020-0821-1135-00-750
"""
# A TEMP file of a session without annotation (KEMDy20 has TEMP for sessions 41-42).
TEMP_S41 = "1599641999.000000\n4.000000\n" + """\
32.00,2020-0909-1000-00-000
32.01,2020-0909-1000-00-250,Sess41_script01_User081F_001
32.02,2020-0909-1000-00-500,Sess41_script01_User081F_001
"""

T0 = 11 * 3600 + 28 * 60 + 57  # 2020-0821-1128-57-000 as seconds of day
F1, F2, M1, M2 = ("Sess01_script01_User001F_001", "Sess01_script01_User001F_002",
                  "Sess01_script01_User002M_001", "Sess01_script02_User002M_001")
SEGMENTS = {F1: (1.25, 2.0), M1: (1.5, 2.75), F2: (3.0, 3.5), M2: (0.5, 1.5)}

EXPECTED_ENTITIES = {
    F1: [[T0 + 0.25, 0.5123, 33.11], [T0 + 0.75, 0.521, 33.13]],
    F2: [[T0 + 1.25, 0.541, 33.15], [T0 + 1.5, 0.552, 33.16]],
    M1: [[T0 + 0.5, 2.12, 35.22], [T0 + 0.75, 2.13, 35.23], [T0 + 1.0, 2.14, 35.24]],
}


def write_hand_dataset(root: Path) -> Path:
    files = {
        "annotation/Sess01_eval.csv": ANNOTATION,
        "EDA/Session01/Sess01_script01_User001F.csv": EDA_S1_F,
        "EDA/Session01/Sess01_script01_User002M.csv": EDA_S1_M,
        "EDA/Session01/Sess01_script02_User002M.csv": EDA_S2_M,
        "TEMP/Session01/Sess01_script01_User001F.csv": TEMP_S1_F,
        "TEMP/Session01/Sess01_script01_User002M.csv": TEMP_S1_M,
        "TEMP/Session41/Sess41_script01_User081F.csv": TEMP_S41,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    wav_dir = root / "wav" / "Session01"
    wav_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for segment, (start, end) in SEGMENTS.items():
        audio = (0.1 * rng.standard_normal(int(round((end - start) * 16000)))).astype(np.float32)
        sf.write(wav_dir / f"{segment}.wav", audio, 16000, subtype="PCM_16")
        (wav_dir / f"{segment}.txt").write_bytes("오늘 날씨가 정말 좋네요\n".encode("cp949"))
    return root


@pytest.fixture
def hand_root(tmp_path: Path) -> Path:
    return write_hand_dataset(tmp_path / "KEMDy20")


@pytest.fixture
def hand_frames(hand_root: Path) -> frames.Frames:
    # One of four segments is dropped (no TEMP file), above the default 15 %: allow it here.
    return frames.build_frames(hand_root, max_skip_share=0.5)


# --------------------------------------------------------------------------- readers


def test_timestamps_to_seconds_of_day():
    stamps = np.array(["2020-0821-1128-57-250", "2020-0821-0000-00-000", "2020-1231-2359-59-999",
                       "2020-0821-0946-43-000"])
    seconds, valid = kemdy20.parse_timestamps(stamps)
    assert valid.all()
    np.testing.assert_array_equal(
        seconds, [11 * 3600 + 28 * 60 + 57.25, 0.0, 23 * 3600 + 59 * 60 + 59.999, 9 * 3600 + 46 * 60 + 43])


@pytest.mark.parametrize("stamp", [
    "2020-0821-1128-57-25",  # too short
    "2020-0821-1128-57-2500",  # too long
    "2020/0821-1128-57-250",  # wrong separator
    "2020-0821 1128-57-250",
    "2020-0821-11:8-57-250",  # non-digit
    "2020-0821-2528-57-250",  # hour 25
    "2020-0821-1161-57-250",  # minute 61
    "2020-0821-1128-60-250",  # second 60
    "1598009337.25",
    "",
])
def test_malformed_timestamps_are_flagged(stamp):
    seconds, valid = kemdy20.parse_timestamps(np.array(["2020-0821-1128-57-250", stamp]))
    assert valid.tolist() == [True, False]
    assert seconds[0] == T0 + 0.25 and np.isnan(seconds[1])


def test_read_annotation(hand_root):
    table = kemdy20.read_annotation(hand_root / "annotation" / "Sess01_eval.csv")
    assert table["segment_id"].tolist() == [F1, M1, F2, M2]
    assert table["Numb"].tolist() == [1, 2, 3, 4]
    assert table["wav_start"].tolist() == [1.25, 1.5, 3.0, 0.5]
    assert table["wav_end"].tolist() == [2.0, 2.75, 3.5, 1.5]
    assert table["session"].tolist() == [1, 1, 1, 1]
    assert table["identity"].tolist() == ["User001F", "User002M", "User001F", "User002M"]
    assert table["emotion"].tolist() == ["neutral;happy", "disqust", "angry", "sad"]
    assert table["valence"].tolist() == [3.5, 1.9, 1.6, 1.8]
    assert table["arousal"].tolist() == [3.1, 3.2, 4.4, 2.0]
    # The tie is a multi-hot of both labels; the metric target is the first listed one.
    assert table["emotion_one_hot"].tolist() == ["1 1 0 0 0 0 0", "0 0 0 0 0 1 0", "0 0 0 1 0 0 0",
                                                 "0 0 0 0 1 0 0"]
    assert table["target"].tolist() == [0, 5, 3, 4]


def test_tie_target_is_first_listed_label():
    assert kemdy20.parse_emotions("neutral;happy") == [0, 1]
    assert kemdy20.parse_emotions("happy;neutral") == [1, 0]
    assert kemdy20.parse_emotions("disqust") == [5]
    with pytest.raises(ValueError, match="disgust"):
        kemdy20.parse_emotions("disgust")


def test_read_bio_keeps_rows_inside_segments(hand_root):
    eda = kemdy20.read_bio(hand_root / "EDA/Session01/Sess01_script01_User001F.csv", "EDA")
    assert list(eda.columns) == ["EDA_value", "ts", "segment_id"]
    assert eda["EDA_value"].tolist() == [0.5123, 0.5134, 0.521, 0.541, 0.552]
    assert eda["ts"].tolist() == [T0 + 0.25, T0 + 0.5, T0 + 0.75, T0 + 1.25, T0 + 1.5]
    assert eda["segment_id"].tolist() == [F1, F1, F1, F2, F2]
    temp = kemdy20.read_bio(hand_root / "TEMP/Session01/Sess01_script01_User001F.csv", "TEMP")
    assert list(temp.columns) == ["TEMP_value", "ts", "segment_id"]
    assert temp["TEMP_value"].tolist() == [33.11, 33.13, 33.15, 33.16, 33.17]
    assert temp["segment_id"].tolist() == [F1, F1, F2, F2, F2]


def test_read_bio_of_preamble_only_file_is_empty(tmp_path):
    path = tmp_path / "Sess01_script01_User001F.csv"
    path.write_text(PREAMBLE)
    assert len(kemdy20.read_bio(path, "EDA")) == 0


# --------------------------------------------------------------------------- the dataframe stage


def test_join_counts_in_report(hand_frames):
    r = hand_frames.report
    assert r["segments_annotated"] == 4
    assert r["segments_with_wav"] == 4
    assert r["segments_with_every_bio_stream"] == 3
    assert r["segments_kept"] == 3
    assert r["dropped"] == {"no_wav": 0, "no_joined_bio_rows": 1}
    assert r["bio_rows_in_segments"] == {"EDA": 10, "TEMP": 8, "joined": 7}
    assert r["join_dropped_rows"] == {"EDA_only": 3, "TEMP_only": 1, "not_annotated": 0}
    no_dup = {"duplicate_rows": 0, "conflicting_duplicates": 0}
    assert r["files"]["EDA"] == {"files": 3, "files_without_annotation": 0, "sessions_without_annotation": [],
                                 **no_dup}
    assert r["files"]["TEMP"] == {"files": 2, "files_without_annotation": 1, "sessions_without_annotation": [41],
                                  **no_dup}
    # F_001 lost its 57-500 node (EDA only): one gap of one step; its 57-750 node keeps its time
    assert r["irregular"] == {"duplicate_rows": {"EDA": 0, "TEMP": 0}, "conflicting_duplicates": {"EDA": 0, "TEMP": 0},
                              "nodes_off_grid": 0, "gaps": 1, "missing_steps": 1, "segments_with_gaps": 1}
    assert r["dropped_segments"] == {"Sess01_script02_User002M_001": "no_joined_bio_rows"}
    assert r["samples"] == 7
    text = frames.format_report(hand_frames)
    assert "segments kept: 3" in text
    assert "1 without joined EDA/TEMP rows" in text
    assert "sessions 41" in text


def test_default_skip_share_refuses_one_in_four_dropped(hand_root):
    with pytest.raises(util.DataError, match="MAX_SKIP_SHARE"):
        frames.build_frames(hand_root)


def test_artifacts_of_hand_worked_case(hand_root, hand_frames):
    frames.write_frames(hand_frames, hand_root)
    assert sorted(p.name for p in hand_root.iterdir() if p.is_file()) == sorted(frames.artifacts())

    gt = pd.read_csv(hand_root / "gt_aug.csv", dtype=str, keep_default_na=False)
    assert gt["segment_id"].tolist() == [F1, M1, F2]
    assert gt["emotion"].tolist() == ["neutral;happy", "disqust", "angry"]
    assert gt["emotion_one_hot"].tolist() == ["1 1 0 0 0 0 0", "0 0 0 0 0 1 0", "0 0 0 1 0 0 0"]
    assert gt["target"].tolist() == ["0", "5", "3"]
    assert gt["identity"].tolist() == ["User001F", "User002M", "User001F"]
    assert gt["split"].tolist() == ["train"] * 3
    assert gt["n_samples"].tolist() == ["2", "3", "2"]
    assert gt["wav_start"].astype(float).tolist() == [1.25, 1.5, 3.0]
    assert gt["wav_end"].astype(float).tolist() == [2.0, 2.75, 3.5]

    eda = pd.read_csv(hand_root / "EDA_aug.csv")
    assert list(eda.columns) == ["EDA_value", "ts", "segment_id"]
    # Bio rows of the kept segments, by segment then time; the dropped segment's rows are gone.
    assert eda["segment_id"].tolist() == [F1, F1, F1, F2, F2, M1, M1, M1]
    assert eda["ts"].tolist() == [T0 + 0.25, T0 + 0.5, T0 + 0.75, T0 + 1.25, T0 + 1.5, T0 + 0.5, T0 + 0.75, T0 + 1]
    assert eda["EDA_value"].tolist() == [0.5123, 0.5134, 0.521, 0.541, 0.552, 2.12, 2.13, 2.14]
    temp = pd.read_csv(hand_root / "TEMP_aug.csv")
    assert list(temp.columns) == ["TEMP_value", "ts", "segment_id"]
    assert temp["segment_id"].tolist() == [F1, F1, F2, F2, F2, M1, M1, M1]
    assert temp["TEMP_value"].tolist() == [33.11, 33.13, 33.15, 33.16, 33.17, 35.22, 35.23, 35.24]

    with open(hand_root / "all_entity.pickle", "rb") as fh:
        entities = pickle.load(fh)
    assert sorted(entities) == sorted(EXPECTED_ENTITIES)
    for segment, rows in EXPECTED_ENTITIES.items():
        np.testing.assert_array_equal(entities[segment], np.array(rows))

    with open(hand_root / "ts_script.pickle", "rb") as fh:
        nodes = pickle.load(fh)
    assert list(nodes.columns) == ["session", "ts", "identity", "segment_id", "step"]
    expected = [
        (1, T0 + 0.25, "User001F", F1, 0),
        (1, T0 + 0.5, "User002M", M1, 0),
        (1, T0 + 0.75, "User001F", F1, 1),
        (1, T0 + 0.75, "User002M", M1, 1),
        (1, T0 + 1.0, "User002M", M1, 2),
        (1, T0 + 1.25, "User001F", F2, 0),
        (1, T0 + 1.5, "User001F", F2, 1),
    ]
    assert list(nodes.itertuples(index=False, name=None)) == expected


def test_load_frames_round_trip(hand_root, hand_frames):
    frames.write_frames(hand_frames, hand_root)
    loaded = frames.load_frames(hand_root)
    assert_frames_equal(loaded, hand_frames)


def test_load_frames_reads_tables_with_the_old_segment_id_column(hand_root, hand_frames):
    """Tables built when the segment-ID column was named `script` (frames.OLD_SEGMENT_ID) load as built now."""
    frames.write_frames(hand_frames, hand_root)
    for name in ("gt_aug.csv", "EDA_aug.csv", "TEMP_aug.csv"):
        path = hand_root / name
        header, body = path.read_text(encoding="utf-8").split("\n", 1)
        columns = header.split(",")
        assert "segment_id" in columns
        old = [frames.OLD_SEGMENT_ID if c == "segment_id" else c for c in columns]
        path.write_text(",".join(old) + "\n" + body, encoding="utf-8")
    with open(hand_root / "ts_script.pickle", "rb") as fh:
        nodes = pickle.load(fh)
    with open(hand_root / "ts_script.pickle", "wb") as fh:
        pickle.dump(nodes.rename(columns={"segment_id": frames.OLD_SEGMENT_ID}), fh)
    assert frames.OLD_SEGMENT_ID in pd.read_csv(hand_root / "gt_aug.csv").columns
    assert_frames_equal(frames.load_frames(hand_root), hand_frames)


def test_load_frames_round_trip_tiny(tiny_root):
    loaded = frames.load_frames(tiny_root)
    assert_frames_equal(loaded, frames.build_frames(tiny_root))


def test_load_frames_without_artifacts_names_missing_file(hand_root):
    with pytest.raises(util.DataError, match="EDA_aug.csv"):
        frames.load_frames(hand_root)


def assert_frames_equal(loaded: frames.Frames, built: frames.Frames) -> None:
    pd.testing.assert_frame_equal(loaded.gt, built.gt, check_dtype=False)
    assert list(loaded.bio) == list(built.bio) == ["eda", "temp"]
    for name, table in built.bio.items():
        pd.testing.assert_frame_equal(loaded.bio[name], table, check_dtype=False, check_exact=True)
    pd.testing.assert_frame_equal(loaded.nodes, built.nodes)
    assert list(loaded.entities) == list(built.entities)
    for key, value in built.entities.items():
        np.testing.assert_array_equal(loaded.entities[key], value)


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(("one_hot", "expected"), [
    ("1 1 0 0 0 0 0", [0.5, 0.5, 0, 0, 0, 0, 0]),
    ("0 0 0 0 0 1 0", [0, 0, 0, 0, 0, 1, 0]),
    (np.array([0, 1, 1, 0, 0, 0, 1]), [0, 1 / 3, 1 / 3, 0, 0, 0, 1 / 3]),
])
def test_label_vector_is_normalised_multi_hot(one_hot, expected):
    vector = frames.label_vector(one_hot)
    assert vector.dtype == np.float32 and vector.shape == (7,)
    np.testing.assert_allclose(vector, expected, rtol=1e-6)
    assert vector.sum() == pytest.approx(1.0)


def test_build_entities_equals_per_segment_filter():
    rng = np.random.default_rng(3)
    segments = [f"Sess{s:02d}_script01_User{u:03d}F_{k:03d}" for s in (1, 2) for u in (1, 2) for k in range(1, 8)]
    parts = []
    for segment in segments:
        n = int(rng.integers(1, 30))
        ts = 40000 + rng.choice(2000, size=n, replace=False) * 0.25
        parts.append(pd.DataFrame({"EDA_value": rng.uniform(0.01, 20, n), "ts": ts, "segment_id": segment,
                                   "TEMP_value": np.round(rng.uniform(28, 37, n), 2)}))
    joined = pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=1).reset_index(drop=True)
    entities = frames.build_entities(joined)
    assert sorted(entities) == sorted(segments)
    for segment in segments:
        expected = joined[joined["segment_id"] == segment].sort_values("ts")[["ts", "EDA_value", "TEMP_value"]]
        np.testing.assert_array_equal(entities[segment], expected.to_numpy(dtype=np.float64))
    assert frames.build_entities(joined.iloc[:0]) == {}


def test_summary_tables_count_first_listed_label(hand_frames):
    tables = frames.summary_tables(hand_frames)
    segments = tables["segments"]
    assert segments.loc["train", "neutral"] == 1  # the tie counts for its first label only
    assert segments.loc["train", "happy"] == 0
    assert segments.loc["train", "angry"] == 1 and segments.loc["train", "disqust"] == 1
    assert segments.loc["train", "total"] == 3
    samples = tables["samples"]
    assert samples.loc["train", "neutral"] == 2 and samples.loc["train", "disqust"] == 3
    assert samples.loc["train", "total"] == 7
