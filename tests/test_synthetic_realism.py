"""The synthetic generator's nuisance at published magnitudes (docs/synthetic-data.md): EDA levels
and non-responders, non-specific and arousal-linked skin-conductance responses, TEMP drift without an
emotion effect, E4 quantisation, speaker spread against emotion effects, rare and shared emotion words,
benchmarks/modality_probe.py on the tiny preset, and the generator's version in the demo data's key."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from scipy.signal import find_peaks
from script_module import load_script
from sklearn.metrics import f1_score

from encoder.core import config, kemdy20, synthetic
from temporal_gnn import pipeline_run, stages

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "benchmarks" / "modality_probe.py"
EMOTION = {name: i for i, name in enumerate(config.EMOTIONS)}


@pytest.fixture(scope="module")
def probe_module() -> ModuleType:
    return load_script(PROBE)


def people(n: int = 4000) -> list[dict]:
    rng = np.random.default_rng(7)
    return [synthetic.person_traits(f"User{i:03d}{'FM'[i % 2]}", 0.002, rng) for i in range(n)]


def rows_by_participant(root: Path, modality: str) -> pd.DataFrame:
    """Every in-segment row of a modality with its participant (session and user)."""
    tables = [kemdy20.read_bio(f, modality).assign(participant=f.stem[:6] + f.stem[-8:])
              for f in kemdy20.bio_files(root, modality)]
    return pd.concat([t for t in tables if len(t)], ignore_index=True)


def variance_ratio(table: pd.DataFrame, column: str) -> float:
    """Variance of the participants' means over the mean of their own variances."""
    groups = table[column].groupby(table["participant"])
    return float(groups.mean().var() / groups.var().mean())


# --------------------------------------------------------------------------- participants


def test_eda_levels_log_normal_with_non_responders():
    traits = people()
    responder = np.array([p["responder"] for p in traits])
    assert 0.10 <= 1 - responder.mean() <= 0.20
    levels = np.array([p["eda_level"] for p in traits])
    on = levels[responder]
    assert on.min() >= 0.05 and on.max() <= 20
    lo, hi = np.quantile(on, [0.05, 0.95])
    assert hi / lo > 20  # log-normal: a wide spread across people, not U(0.5, 8)
    assert abs(np.log(on).mean() - np.log(synthetic.EDA_LEVEL_US[0])) < 0.1
    assert (levels[~responder] < 0.1).all()
    temp = np.array([p["temp_level"] for p in traits])
    assert temp.min() >= 29 and temp.max() <= 35 and 0.8 < temp.std() < 1.6


def test_speaker_spread_larger_than_most_emotion_effects():
    effects = {"f0": np.abs(np.log(synthetic.EMOTION_PARAMS[1:, synthetic.F0])),
               "gain": np.abs(synthetic.EMOTION_PARAMS[1:, synthetic.GAIN]),
               "rate": np.abs(np.log(synthetic.EMOTION_PARAMS[1:, synthetic.RATE]
                                     / synthetic.EMOTION_PARAMS[0, synthetic.RATE]))}
    traits = people(2000)
    women = np.array([p["f0"] for p in traits if p["formant"] > 1])
    spread = {"f0": np.log(women).std(), "gain": np.std([p["gain"] for p in traits]),
              "rate": np.log([p["rate"] for p in traits]).std()}
    for cue, effect in effects.items():
        assert (effect > spread[cue]).sum() <= 1, cue
        assert effect.max() > 0  # still an effect to learn


# --------------------------------------------------------------------------- EDA


def rest(minutes: float, person: dict, seed: int, emotion: str = "neutral", start: float = 0.0) -> np.ndarray:
    """EDA of `minutes` with one utterance of `emotion` at `start` (s) and nothing else."""
    times = np.arange(0, minutes * 60, config.BIO_STEP_S)
    utt = synthetic.Utterance("Sess01_script01_User001F_001", 1, 1, 0, start, start + 5, EMOTION[emotion], 1.0)
    return synthetic.eda_signal(times, 36000 + times, [utt], 0, person, {"start": 36000.0},
                                np.random.default_rng(seed))


def responder(**changes: float) -> dict:
    person = synthetic.person_traits("User001F", 0.002, np.random.default_rng(0))
    return {**person, "responder": True, "eda_level": 2.0, "scr_amplitude": 0.05, "ns_scr_per_min": 2.0,
            "eda_trend": 0.0, **changes}


def test_non_specific_responses_at_rest_one_to_three_a_minute():
    rates = []
    for seed in range(3):
        eda = rest(20, responder(), seed)
        peaks, _ = find_peaks(eda, prominence=0.01)
        rates.append(len(peaks) / 20)
    assert 1.0 <= np.mean(rates) <= 3.5, rates
    flat = rest(20, responder(responder=False, eda_level=0.03, scr_amplitude=0.002, ns_scr_per_min=0.2), 0)
    assert flat.max() < 0.1 and np.ptp(flat) < 0.05  # a non-responder: flat near the floor


def test_arousal_linked_response_latency_rise_and_rate():
    quiet = responder(eda_level=0.5, scr_amplitude=0.5, ns_scr_per_min=0.0)  # level low: little drift
    peak_after, responded = [], {"angry": 0, "sad": 0}
    for seed in range(40):
        for emotion in responded:
            eda = rest(0.75, quiet, seed, emotion, start=10.0)
            rise = eda[40:80] - eda[40]  # the 10 s after the utterance's start
            if rise.max() > 0.1:
                responded[emotion] += 1
                peak_after.append(np.argmax(rise) * config.BIO_STEP_S)
    # onset 1-3 s after the utterance starts, peak 1-3 s later
    low, high = np.quantile(peak_after, [0.1, 0.9])  # a few responses ride on drift or an earlier response
    assert low >= 2.0 and high <= 6.5, (low, high)
    assert responded["angry"] > responded["sad"] + 10  # the planted arousal effect
    amplitudes = synthetic.SCR_AMPLITUDE_US[0] * np.exp(synthetic.SCR_AMPLITUDE_US[1]
                                                        * np.random.default_rng(0).standard_normal(1000))
    assert np.quantile(amplitudes, 0.1) > 0.01 and np.quantile(amplitudes, 0.9) < 0.2  # hundredths to tenths


# --------------------------------------------------------------------------- the written data


def test_between_within_participant_variance_plausible(tiny_raw):
    eda, temp = rows_by_participant(tiny_raw, "EDA"), rows_by_participant(tiny_raw, "TEMP")
    # the previous generator: 335 (EDA) and 201 (TEMP), a label left nearly noise-free by z-scoring
    assert 2 < variance_ratio(eda, "EDA_value") < 150
    assert 3 < variance_ratio(temp, "TEMP_value") < 100
    within_sd = temp["TEMP_value"].groupby(temp["participant"]).std()
    # tenths of a degree over a session (tiny's sessions last minutes), above the 0.02 °C resolution
    assert (within_sd > 0.02).all() and within_sd.median() > 0.05 and (within_sd < 1.0).all()


def test_e4_resolution(tiny_raw):
    temp = rows_by_participant(tiny_raw, "TEMP")["TEMP_value"].to_numpy()
    np.testing.assert_allclose(temp / 0.02, np.round(temp / 0.02), atol=1e-6)
    eda = rows_by_participant(tiny_raw, "EDA")["EDA_value"].to_numpy()
    eda = eda[eda > 0.01]
    np.testing.assert_allclose(eda / 0.0009, np.round(eda / 0.0009), atol=2e-3)


def test_temp_carries_no_emotion(tmp_path):
    """Other labels (another balance draws other emotions from the same streams) move EDA, not one TEMP
    row: no emotion effect on TEMP at any scale, so none above the 0.02 °C resolution between emotions."""
    files = {}
    for balance in ("kemdy20", "uniform"):
        root = tmp_path / balance
        synthetic.make_dataset(root, "tiny", seed=0, with_wav=False, balance=balance)
        files[balance] = {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.csv"))}
    changed = {p.parts[0] for p in files["kemdy20"] if files["kemdy20"][p] != files["uniform"][p]}
    assert changed == {"annotation", "EDA"}


# --------------------------------------------------------------------------- transcripts


def test_emotion_words_rare_and_shared(probe_module):
    lists = [set(words) for words in synthetic.EMOTION_WORDS]
    shared = [sum(w in other for other in lists) > 1 for words in lists for w in words]
    assert np.mean(shared) >= 0.4
    rng = np.random.default_rng(3)
    prior = synthetic.PRIORS["kemdy20"]
    states = rng.choice(len(prior), size=3000, p=prior)
    texts = [" ".join(synthetic.transcript_words(rng.choice(synthetic.KOREAN_WORDS, size=int(rng.integers(3, 9))),
                                                 int(s), rng)) for s in states]
    own = np.mean([any(w in lists[s] for w in t.split()) for t, s in zip(texts, states, strict=True)])
    assert own < 0.5  # the previous generator: 81% of segments held a word of their own class's list
    rule = probe_module.word_list_rule(texts)
    assert f1_score(states, rule, average="macro") < 0.35  # the previous generator: 0.83


def test_modality_probe_on_a_kemdy20_folder(tiny_raw):
    run = subprocess.run([sys.executable, str(PROBE), "--data", str(tiny_raw), "--folds", "2"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert str(tiny_raw) in lines[0]
    scores = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): float(line.split("|")[3])
              for line in lines[3:]}
    assert ("majority", "-") in scores and ("EDA+TEMP", "participant-normalised") in scores
    assert ("text word-list rule (no training)", "-") in scores and len(scores) == 11
    assert all(0 <= f1 <= 1 for f1 in scores.values())


# --------------------------------------------------------------------------- the demo data's key


def test_generator_version_in_the_demo_key_regenerates(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config, "KEMDY20_ROOT", tmp_path / "no_download")
    args = argparse.Namespace(data=None, preset="tiny", seed=0)
    out = tmp_path / "demo"
    out.mkdir()

    def data_stage() -> str:
        root, key, is_synthetic = pipeline_run.resolve_data(args)
        assert is_synthetic and key["generator"] == synthetic.GENERATOR_VERSION
        pipeline = stages.Pipeline(tmp_path / "pipeline_state.json", force=False)
        pipeline.stage("data", key, [out], lambda: None)
        return capsys.readouterr().out

    assert "[data] running" in data_stage()
    assert "[data] up to date, skipped" in data_stage()
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    assert "[data] running" in data_stage()
