"""Clips are placed by time, not by row index: a duplicated EDA row and a missing TEMP row change no
surviving node's audio or bio clip, and the dataframe stage counts both (frames.py, the rule)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.core import config, frames, kemdy20
from encoder.core.custom_transforms import Normalization, SpectrogramParams
from encoder.core.dataset import SegmentDataset, load_segments, node_batches

SMALL = SpectrogramParams(sample_rate=4000, n_fft=256, win_length=250, hop_length=250, n_mels=16, fmax=None)
UNIT = Normalization.unit(("eda", "temp"))  # clips compared as they are
CLIP = 11
SESSION = 1


def segment_lines(path: Path) -> dict[str, list[int]]:
    """Segment ID -> indices of its rows in the file's lines (preamble included)."""
    lines = path.read_text().splitlines()
    found: dict[str, list[int]] = {}
    for i, line in enumerate(lines[kemdy20.BIO_PREAMBLE_LINES:], start=kemdy20.BIO_PREAMBLE_LINES):
        parts = line.split(",")
        if len(parts) == 3 and parts[2]:
            found.setdefault(parts[2], []).append(i)
    return found


def corrupt(root: Path) -> tuple[str, float, str, float]:
    """Duplicate one EDA row inside a segment and delete one TEMP row inside another, both mid-segment.
    Returns (duplicated segment, its time, segment missing a TEMP row, the missing time)."""
    eda_file = sorted((root / "EDA" / f"Session{SESSION:02d}").glob("*.csv"))[0]
    temp_file = root / "TEMP" / eda_file.parent.name / eda_file.name
    eda_rows = segment_lines(eda_file)
    long_segments = [s for s, rows in eda_rows.items() if len(rows) >= 12]
    dup_segment, gap_segment = long_segments[0], long_segments[1]

    lines = eda_file.read_text().splitlines()
    dup_line = eda_rows[dup_segment][5]
    lines.insert(dup_line + 1, lines[dup_line])
    eda_file.write_text("\n".join(lines) + "\n")

    lines = temp_file.read_text().splitlines()
    gap_line = segment_lines(temp_file)[gap_segment][6]
    removed = lines.pop(gap_line)
    temp_file.write_text("\n".join(lines) + "\n")
    seconds = lambda line: float(kemdy20.parse_timestamps(np.array([line.split(",")[1]]))[0][0])  # noqa: E731
    return dup_segment, seconds(lines[dup_line]), gap_segment, seconds(removed)


def node_clips(root: Path, built: frames.Frames) -> dict[tuple[str, float], tuple[np.ndarray, ...]]:
    """(segment, node time) -> (audio clip, EDA clip, TEMP clip) of every node of session 1, as the
    extraction stage cuts them."""
    table = load_segments(built, root, {"x": (SESSION,)}, wanted=("x",))
    segments = table.by_split["x"]
    dataset = SegmentDataset(segments, UNIT, CLIP, SMALL)
    clips = {}
    for batch in node_batches((dataset[i] for i in range(len(dataset))), 64, CLIP, SMALL):
        for k, (i, step) in enumerate(zip(batch.segment_index, batch.step, strict=True)):
            seg = segments[i]
            key = (seg.segment_id, float(seg.ts[step]))
            assert key not in clips, f"two nodes at {key}"
            clips[key] = (batch.audio[k, 0].numpy(), batch.bio["eda"][k, 0].numpy(), batch.bio["temp"][k, 0].numpy())
    return clips


@pytest.fixture(scope="module")
def clean_and_corrupted(tiny_raw, tmp_path_factory):
    base = tmp_path_factory.mktemp("alignment")
    clean, broken = base / "clean", base / "broken"
    shutil.copytree(tiny_raw, clean)
    shutil.copytree(tiny_raw, broken)
    where = corrupt(broken)
    with torch.no_grad():
        built = {name: frames.build_frames(root) for name, root in (("clean", clean), ("broken", broken))}
    return clean, broken, built, where


def test_duplicated_and_missing_rows_are_counted(clean_and_corrupted):
    _, _, built, _ = clean_and_corrupted
    clean, broken = built["clean"].report, built["broken"].report
    assert broken["irregular"]["duplicate_rows"] == {"EDA": 1, "TEMP": 0}
    assert broken["irregular"]["conflicting_duplicates"] == {"EDA": 0, "TEMP": 0}
    assert broken["join_dropped_rows"]["EDA_only"] == clean["join_dropped_rows"]["EDA_only"] + 1
    assert broken["irregular"]["gaps"] == clean["irregular"]["gaps"] + 1
    assert broken["irregular"]["missing_steps"] == clean["irregular"]["missing_steps"] + 1
    assert broken["samples"] == clean["samples"] - 1
    text = frames.format_report(built["broken"])
    assert "duplicates dropped EDA 1, TEMP 0" in text and "gaps 1 in 1 segments (1 missing steps)" in text


def test_every_surviving_node_keeps_its_clips(clean_and_corrupted):
    clean_root, broken_root, built, (dup_segment, dup_time, gap_segment, gap_time) = clean_and_corrupted
    clean = node_clips(clean_root, built["clean"])
    broken = node_clips(broken_root, built["broken"])
    assert set(broken) == set(clean) - {(gap_segment, gap_time)}  # the duplicate adds no node
    assert (dup_segment, dup_time) in broken
    steps = (np.arange(CLIP) - CLIP // 2) * config.BIO_STEP_S
    changed = 0
    for key, (audio, eda, temp) in broken.items():
        clean_audio, clean_eda, clean_temp = clean[key]
        assert np.array_equal(audio, clean_audio), key
        assert np.array_equal(eda, clean_eda), key  # the EDA row at the missing TEMP time is still there
        reads_gap = (key[0] == gap_segment) & np.isclose(key[1] + steps, gap_time, rtol=0, atol=1e-6)
        assert np.array_equal(temp[~reads_gap], clean_temp[~reads_gap]), key
        if reads_gap.any():  # the missing TEMP value: linear interpolation of its two neighbours in time
            k = int(np.flatnonzero(reads_gap)[0])
            neighbours = built["clean"].bio["temp"].set_index(["segment_id", "ts"]).loc[
                [(gap_segment, gap_time - config.BIO_STEP_S), (gap_segment, gap_time + config.BIO_STEP_S)],
                "TEMP_value"]
            assert temp[k] == pytest.approx(neighbours.mean(), abs=1e-5)
            changed += 1
    assert changed == CLIP - 1  # the clips of the nodes around the gap, within clip_length // 2 steps
