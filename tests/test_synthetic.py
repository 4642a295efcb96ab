"""The synthetic KEMDy20 generator: its `tiny` output read back as a KEMDy20 download,
determinism, the CLI, label balance, and emotion cues in the synthetic speech."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from encoder.core import config, frames, kemdy20, layout, synthetic

REPO = Path(__file__).resolve().parents[1]
CLI = ["encoder/data/make_synthetic_kemdy20.py"]

# Written from KEMDy20's layout (docs/kemdy20.md), not taken from the code under test.
SEGMENT_RE = re.compile(r"^Sess(\d{2})_script(0[1-6])_User(\d{3})([FM])_(\d{3})$")
BIO_FILE_RE = re.compile(r"^Sess(\d{2})_script(0[1-6])_User(\d{3})([FM])\.csv$")
BIO_ROW_RE = re.compile(r"^-?\d+(\.\d+)?,\d{4}-\d{4}-\d{4}-\d{2}-\d{3}(,Sess\d{2}_script\d{2}_User\d{3}[FM]_\d{3})?$")
TINY = synthetic.PRESETS["tiny"]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def annotations(tiny_raw: Path) -> pd.DataFrame:
    return pd.concat([kemdy20.read_annotation(f) for f in kemdy20.check_root(tiny_raw)], ignore_index=True)


# --------------------------------------------------------------------------- layout


def test_layout(tiny_raw):
    assert sorted(p.name for p in (tiny_raw / "annotation").iterdir()) == [
        f"Sess{s:02d}_eval.csv" for s in sorted(TINY.sessions)]
    assert sorted(p.name for p in (tiny_raw / "wav").iterdir()) == [f"Session{s:02d}" for s in sorted(TINY.sessions)]
    for modality in ("EDA", "TEMP"):
        for folder in (tiny_raw / modality).iterdir():
            assert re.fullmatch(r"Session\d{2}", folder.name)
            for path in folder.iterdir():
                match = BIO_FILE_RE.match(path.name)
                assert match, path
                assert folder.name == f"Session{match.group(1)}"


def test_annotation_header_rows(tiny_raw):
    for path in (tiny_raw / "annotation").iterdir():
        lines = path.read_text(encoding="utf-8").splitlines()
        head = lines[0].split(",")
        assert head[:7] == ["Numb", "Wav", "", "Segment ID", "Total Evaluation", "", ""]
        assert head[7::3] == [f"Eval{i:02d}{g}" for i, g in zip(range(1, 11), "FMFMFMFMFM", strict=True)]
        assert lines[1].split(",") == [" ", "start", "end", " ", "Emotion", "Valence", "Arousal"] + [
            "Emotion", "Valence", "Arousal"] * 10
        for line in lines[2:]:
            cells = line.split(",")
            assert len(cells) == 37
            assert all(c in config.EMOTIONS for c in cells[7::3])
            assert all(1 <= int(c) <= 5 for c in cells[8::3] + cells[9::3])
            assert 1.0 <= float(cells[5]) <= 5.0 and 1.0 <= float(cells[6]) <= 5.0


def test_bio_files_have_preamble_and_4hz_rows(tiny_raw):
    files = list((tiny_raw / "EDA").rglob("*.csv")) + list((tiny_raw / "TEMP").rglob("*.csv"))
    assert files
    for path in files:
        lines = path.read_text().splitlines()
        assert "," not in lines[0] and "," not in lines[1], path  # device preamble, not data
        float(lines[0]), float(lines[1])
        body = lines[2:]
        assert body and all(BIO_ROW_RE.match(line) for line in body), path
        seconds, valid = kemdy20.parse_timestamps(np.array([line.split(",")[1] for line in body]))
        assert valid.all()
        np.testing.assert_allclose(np.diff(seconds), 0.25, atol=1e-6)
        values = np.array([float(line.split(",")[0]) for line in body])
        if path.parts[-3] == "EDA":
            assert ((values >= 0.01) & (values <= 30)).all()
        else:
            assert ((values >= 25) & (values <= 40)).all()
        if path.parent.name != "Session41":
            assert any(line.count(",") == 1 for line in body) and any(line.count(",") == 2 for line in body)


def test_wavs_and_transcripts(tiny_raw, annotations):
    wavs = sorted((tiny_raw / "wav").rglob("*.wav"))
    assert sorted(p.stem for p in wavs) == sorted(annotations["segment_id"])
    for row in annotations.itertuples():
        path = layout.wav_path(tiny_raw, row.segment_id)
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.frames - (row.wav_end - row.wav_start) * 16000) <= 1, row.segment_id
        text = path.with_suffix(".txt").read_bytes().decode("cp949")
        assert text.strip() and any(ord(ch) > 127 for ch in text)


def test_segment_ids_and_participants(annotations):
    by_session = defaultdict(set)
    indices = defaultdict(list)
    for segment, session in zip(annotations["segment_id"], annotations["session"], strict=True):
        match = SEGMENT_RE.match(segment)
        assert match, segment
        ss, cc, uuu, gender, kkk = match.groups()
        assert int(ss) == session
        assert 1 <= int(cc) <= TINY.scripts
        assert int(uuu) in (2 * session - 1, 2 * session)
        by_session[session].add(f"User{uuu}{gender}")
        indices[(session, cc, uuu)].append(int(kkk))
    assert sorted(by_session) == sorted(TINY.sessions)
    assert all(len(users) == 2 for users in by_session.values())
    for key, ks in indices.items():
        assert sorted(ks) == list(range(1, len(ks) + 1)), key
        assert TINY.utterances[0] <= len(ks) <= TINY.utterances[1]
    assert annotations.groupby("session")["Numb"].apply(lambda s: s.tolist() == list(range(1, len(s) + 1))).all()


def test_every_class_in_every_split_among_kept_segments(tiny_raw):
    gt = frames.build_frames(tiny_raw).gt
    for split, sessions in config.SPLITS.items():
        part = gt[gt["session"].isin(sessions)]
        assert set(part["target"]) == set(range(config.NUM_CLASSES)), split


def test_ties_and_labels(annotations):
    assert annotations["emotion"].str.contains(";").any()
    assert "disqust" in set(annotations["emotion"].str.split(";").explode())
    # neutral is the majority with the default (KEMDy20-like) balance
    assert np.bincount(annotations["target"]).argmax() == 0


def test_temp_only_session_and_missing_bio_file(tiny_raw):
    assert (tiny_raw / "TEMP" / "Session41").is_dir() and list((tiny_raw / "TEMP" / "Session41").iterdir())
    assert not (tiny_raw / "EDA" / "Session41").exists()
    assert not (tiny_raw / "annotation" / "Sess41_eval.csv").exists()
    stems = {m: {p.stem for p in (tiny_raw / m).rglob("*.csv") if p.parent.name != "Session41"}
             for m in ("EDA", "TEMP")}
    assert stems["EDA"] != stems["TEMP"]
    assert len(stems["EDA"] ^ stems["TEMP"]) >= 1
    # every participant has a file in at least one modality for every script
    assert len(stems["EDA"] | stems["TEMP"]) == len(TINY.sessions) * TINY.scripts * 2
    users = defaultdict(set)
    for stem in stems["EDA"] | stems["TEMP"]:
        users[stem[:6]].add(stem[16:])
    assert all(len(u) == 2 for u in users.values()) and len(users) == len(TINY.sessions)


# --------------------------------------------------------------------------- determinism and the CLI


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    run = subprocess.run([sys.executable, *CLI, "--out", str(tmp_path / "cli"), "--preset", "tiny", "--seed", "0",
                          "--no-wav"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    synthetic.make_dataset(tmp_path / "a", "tiny", seed=0, with_wav=False)
    synthetic.make_dataset(tmp_path / "b", "tiny", seed=1, with_wav=False)
    cli, a, b = all_files(tmp_path / "cli"), all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert not any(name.startswith("wav") for name in a)
    assert len(a) > 10
    assert cli == a
    assert a != b
    assert a["annotation/Sess01_eval.csv"] != b["annotation/Sess01_eval.csv"]


def test_no_wav_gives_the_same_bio_files(tmp_path, tiny_raw):
    synthetic.make_dataset(tmp_path / "bio", "tiny", seed=0, with_wav=False)
    without_wav = all_files(tmp_path / "bio")
    with_wav = {name: data for name, data in all_files(tiny_raw).items() if not name.startswith("wav")}
    assert sorted(without_wav) == sorted(with_wav)
    assert [name for name in with_wav if with_wav[name] != without_wav[name]] == []


def test_cli_refuses_non_empty_out(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    run = subprocess.run([sys.executable, *CLI, "--out", str(out), "--no-wav"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(out) in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary directory left beside it


def test_balance_uniform_changes_class_distribution(tmp_path):
    shares = {}
    for balance in ("kemdy20", "uniform"):
        root = tmp_path / balance
        synthetic.make_dataset(root, "tiny", seed=0, with_wav=False, balance=balance)
        gt = pd.concat([kemdy20.read_annotation(f) for f in kemdy20.check_root(root)])
        shares[balance] = np.bincount(gt["target"], minlength=config.NUM_CLASSES) / len(gt)
    assert shares["kemdy20"][0] > 0.3
    assert shares["uniform"][0] < 0.25
    assert shares["uniform"].max() < shares["kemdy20"].max()


# --------------------------------------------------------------------------- emotion in the speech


def estimate_pitch(audio: np.ndarray, sr: int = 16000, fmin: float = 60.0, fmax: float = 400.0) -> float:
    """Median autocorrelation pitch (Hz) of the loud frames."""
    frame, hop = 1024, 256
    windows = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), frame)[::hop]
    rms = np.sqrt((windows ** 2).mean(axis=1))
    voiced = windows[rms > 0.3 * rms.max()]
    voiced = voiced - voiced.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(voiced * np.hanning(frame), n=2 * frame, axis=1)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame]
    lo, hi = int(sr / fmax), int(sr / fmin)
    lags = lo + autocorr[:, lo:hi].argmax(axis=1)
    return float(np.median(sr / lags))


@pytest.mark.parametrize("f0", [110.0, 210.0])
def test_speech_carries_emotion(f0):
    speaker = {"f0": f0, "formant": 1.0, "rate": 1.0, "gain": 0.0, "tilt": 0.0, "noise": 0.002}
    emotion = {name: i for i, name in enumerate(config.EMOTIONS)}
    rms, pitch = defaultdict(list), defaultdict(list)
    for seed in range(4):
        for name in ("neutral", "happy", "angry", "sad"):
            audio = synthetic.synthesize_speech(2.0, emotion[name], 1.0, speaker, np.random.default_rng(seed))
            assert audio.dtype == np.float32 and len(audio) == 32000
            assert np.abs(audio).max() <= 1.0
            rms[name].append(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
            pitch[name].append(estimate_pitch(audio))
    # the estimator itself is sane: neutral speech sits near the speaker's f0
    assert np.mean(pitch["neutral"]) == pytest.approx(f0, rel=0.15)
    assert np.mean(rms["angry"]) > 1.5 * np.mean(rms["sad"])
    # conversational, not acted, effects (EMOTION_PARAMS): happy about +6% pitch, sad about -5%
    assert np.mean(pitch["happy"]) > 1.08 * np.mean(pitch["sad"])


def test_a_sample_of_a_preset_writes_its_sessions_as_the_whole_preset_draws_them(tmp_path):
    """--sessions: only the sessions asked for, with the segments (IDs and times) of the whole preset's."""
    synthetic.make_dataset(tmp_path / "whole", "tiny", seed=0, with_wav=False)
    run = subprocess.run([sys.executable, *CLI, "--out", str(tmp_path / "sample"), "--preset", "tiny", "--seed", "0",
                          "--no-wav", "--sessions", "2,37"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "sessions=2" in run.stdout
    whole, sample = all_files(tmp_path / "whole"), all_files(tmp_path / "sample")
    assert sorted(name for name in sample if name.startswith("annotation")) == [
        "annotation/Sess02_eval.csv", "annotation/Sess37_eval.csv"]
    for session in (2, 37):
        name = f"annotation/Sess{session:02d}_eval.csv"
        ids = [re.findall(r"[\d.]+,[\d.]+,Sess\d+_script\d+_User\d+[MF]_\d+", data.decode("utf-8"))
               for data in (whole[name], sample[name])]
        assert ids[0] and ids[0] == ids[1]
    with pytest.raises(ValueError, match="not in the tiny preset"):
        synthetic.make_dataset(tmp_path / "bad", "tiny", seed=0, with_wav=False, sessions=[3])
