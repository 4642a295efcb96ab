"""A synthetic dataset in the exact on-disk format of KEMDy20, with learnable signals whose nuisance is
at published magnitudes, so that it teaches nothing real recordings would not (the card with magnitudes
and sources: docs/synthetic-data.md).

Each participant's emotion is a sticky Markov state over their consecutive utterances in a script.
The state shapes speech, EDA and the transcript, none of which is enough on its own. TEMP carries no
emotion and draws from a random stream of its own, so other labels leave every TEMP byte unchanged
(a test checks it). What each signal is made of, with its magnitudes: docs/synthetic-data.md.

Annotators vote with noise; ties are written as `a;b`. Everything is drawn from one seed, per
session, so the same seed gives the same bytes; GENERATOR_VERSION names the generator's output.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter
from tqdm import tqdm

from encoder.core import config, layout, streams, util

# Bumped whenever the generator's output changes: it is part of the demo data's key in run_pipeline.py, so a
# changed generator regenerates encoder/KEMDy20_demo.
GENERATOR_VERSION = 2
SAMPLE_RATE = 16000
N_EVALUATORS = 10
EVALUATORS = [f"Eval{i:02d}{'F' if i % 2 else 'M'}" for i in range(1, N_EVALUATORS + 1)]

PRIORS = {
    "kemdy20": np.array([0.55, 0.15, 0.08, 0.07, 0.07, 0.04, 0.04]),
    "uniform": np.full(config.NUM_CLASSES, 1.0 / config.NUM_CLASSES),
}

# Per emotion (config.EMOTIONS order): pitch factor, pitch range (semitones), gain (dB), syllables/s,
# source low-pass coefficient (higher = darker), breathiness, arousal, mean valence and arousal ratings.
# The speech effects are those of conversational, not acted, speech: a few percent of pitch and rate and
# a few dB, smaller than the spread between speakers of one gender (SPEAKER_SPREAD).
EMOTION_PARAMS = np.array(
    [
        # f0    range gain  rate  tilt   breath arousal val  aro
        [1.00, 1.5, 0.0, 4.2, 0.900, 0.05, 0.0, 3.0, 2.8],  # neutral
        [1.06, 2.1, 1.5, 4.4, 0.885, 0.05, 0.5, 4.2, 3.5],  # happy
        [1.09, 2.5, 1.0, 4.3, 0.890, 0.07, 0.8, 3.5, 4.0],  # surprise
        [1.04, 1.9, 3.0, 4.6, 0.860, 0.04, 1.0, 1.8, 4.3],  # angry
        [0.95, 1.1, -2.5, 3.8, 0.915, 0.09, -0.4, 1.8, 2.2],  # sad
        [0.98, 1.6, -0.5, 4.0, 0.905, 0.07, 0.3, 2.0, 3.0],  # disqust
        [1.07, 1.8, -1.0, 4.7, 0.905, 0.10, 0.8, 2.0, 3.8],  # fear
    ]
)
F0, F0_RANGE, GAIN, RATE, TILT, BREATH, AROUSAL, VALENCE_MEAN, AROUSAL_MEAN = range(9)

# Speakers: median pitch per gender (Hz) and the spread between speakers of one gender (log sd, about
# 15%); loudness (recording distance, vocal effort) sd in dB; speaking rate log sd. Per utterance, the
# same speaker also varies without emotion (UTTERANCE_SPREAD: pitch log sd, gain dB, rate log sd).
SPEAKER_F0 = {"F": 205.0, "M": 118.0}
SPEAKER_SPREAD = {"f0": 0.15, "gain": 3.0, "rate": 0.12}
UTTERANCE_SPREAD = {"f0": 0.05, "gain": 1.5, "rate": 0.08}

VOWEL_FORMANTS = np.array(  # F1, F2, F3 in Hz for a, i, u, e, o
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]]
)
FORMANT_BANDWIDTHS = np.array([80.0, 110.0, 160.0])

KOREAN_WORDS = (
    "오늘", "날씨가", "정말", "좋네요", "그런데", "저는", "어제", "영화를", "봤어요", "너무",
    "재미있었어요", "왜", "그렇게", "생각해요", "글쎄요", "잘", "모르겠어요", "진짜", "화가",
    "나요", "조금", "무서웠어요", "슬픈", "이야기네요", "우리", "같이", "가요", "그", "사람은",
    "항상", "늦어요", "괜찮아요", "맛있는", "음식을", "먹고", "싶어요", "정말요", "놀랐어요",
)


# Words that point to an emotion (config.EMOTIONS order). Half of each list is shared with a related
# emotion (좋아요 neutral/happy, 대박 happy/surprise, 깜짝 surprise/fear, 설마 surprise/angry, 싫어요
# angry/disgust, 답답해요 angry/sad, 힘들어요 sad/fear, 끔찍해요 disgust/fear, ...), so a word alone
# rarely names one emotion.
EMOTION_WORDS = (
    ("그렇군요", "알겠습니다", "보통이에요", "좋아요", "그냥", "괜찮아요"),  # neutral
    ("기뻐요", "행복해요", "좋아요", "대박", "웃겨요", "고마워요"),  # happy
    ("세상에", "어머", "대박", "깜짝", "설마", "정말요"),  # surprise
    ("짜증나요", "열받아요", "설마", "싫어요", "답답해요", "어이없어요"),  # angry
    ("슬퍼요", "눈물이", "답답해요", "힘들어요", "미안해요", "괜찮아요"),  # sad
    ("역겨워요", "불쾌해요", "싫어요", "어이없어요", "끔찍해요", "냄새"),  # disqust
    ("무서워요", "불안해요", "깜짝", "힘들어요", "끔찍해요", "떨려요"),  # fear
)
TEXT_EMOTION_SHARE = 0.05  # chance that a transcript word is replaced by a word of its emotion's list
TEXT_STRAY_SHARE = 0.04  # chance that it is replaced by a word of any emotion's list (people say 좋아요 when sad)


def transcript_words(filler: np.ndarray, state: int, rng: np.random.Generator) -> list[str]:
    """The words of a transcript: each filler word, or with probability TEXT_EMOTION_SHARE a word of
    EMOTION_WORDS[state], or with probability TEXT_STRAY_SHARE a word of a random emotion's list (all
    drawn from `rng`, the session's text stream, the same number of draws whatever the state)."""
    u = rng.random(len(filler))
    typical = rng.choice(EMOTION_WORDS[state], size=len(filler))
    stray_class = rng.integers(len(EMOTION_WORDS), size=len(filler))
    stray_pick = rng.integers(len(EMOTION_WORDS[0]), size=len(filler))
    words = []
    for f, t, u_i, c, k in zip(filler, typical, u, stray_class, stray_pick, strict=True):
        if u_i < TEXT_EMOTION_SHARE:
            words.append(str(t))
        elif u_i < TEXT_EMOTION_SHARE + TEXT_STRAY_SHARE:
            words.append(EMOTION_WORDS[c][k % len(EMOTION_WORDS[c])])
        else:
            words.append(str(f))
    return words


@dataclass(frozen=True)
class Preset:
    sessions: tuple[int, ...]
    scripts: int
    utterances: tuple[int, int]  # per participant per script, inclusive range
    temp_only_sessions: tuple[int, ...]
    missing_share: float  # share of (participant, script) bio files dropped for one modality


PRESETS = {
    "tiny": Preset((1, 2, 33, 37), 2, (4, 6), (41,), 0.07),
    "demo": Preset(tuple(range(1, 9)) + (33, 34, 37, 38), 3, (6, 8), (41,), 0.02),
    "full": Preset(tuple(range(1, 41)), 6, (24, 32), (41, 42), 0.05),
}


@dataclass
class Utterance:
    segment_id: str
    session: int
    script: int
    speaker: int  # 0 or 1 within the session
    start: float  # seconds from the script's recording start
    end: float
    state: int  # true emotion carried by the signals
    intensity: float


def participants(session: int, rng: np.random.Generator) -> list[str]:
    """Two participants per session, numbered 2s-1 and 2s; session 40 is two women as in KEMDy20."""
    genders = ["F", "F"] if session == 40 else list(rng.choice(["F", "M"], size=2))
    return [f"User{2 * session - 1 + i:03d}{genders[i]}" for i in range(2)]


def sticky_states(n: int, prior: np.ndarray, rng: np.random.Generator, p_stay: float = 0.7) -> np.ndarray:
    """A Markov chain over n utterances: keep the previous state with p_stay, else redraw from prior."""
    states = np.empty(n, dtype=int)
    states[0] = rng.choice(len(prior), p=prior)
    for i in range(1, n):
        states[i] = states[i - 1] if rng.random() < p_stay else rng.choice(len(prior), p=prior)
    return states


def schedule_script(
    session: int, script: int, names: list[str], preset: Preset, prior: np.ndarray, rng: np.random.Generator
) -> tuple[list[Utterance], float]:
    """Turn-taking utterances of one script; returns them and the script's recording length (s)."""
    counts = rng.integers(preset.utterances[0], preset.utterances[1] + 1, size=2)
    remaining = counts.copy()
    states = [sticky_states(int(c), prior, rng) for c in counts]
    speaker = int(rng.integers(2))
    t = float(rng.uniform(4.0, 10.0))
    utterances: list[Utterance] = []
    while remaining.sum() > 0:
        if remaining[speaker] == 0 or (remaining[1 - speaker] > 0 and rng.random() < 0.6):
            speaker = 1 - speaker if remaining[1 - speaker] > 0 else speaker
        k = counts[speaker] - remaining[speaker]
        remaining[speaker] -= 1
        duration = float(np.clip(rng.gamma(6.0, 1.0), 2.0, 14.0))
        start = round(t, 6)
        end = round(t + duration, 6)
        utterances.append(
            Utterance(
                layout.segment_id(session, script, names[speaker], k + 1),
                session, script, speaker, start, end, int(states[speaker][k]), float(rng.uniform(0.5, 1.0)),
            )
        )
        t = end + float(rng.uniform(0.3, 2.5))
    return utterances, t + float(rng.uniform(4.0, 10.0))


def vote(state: int, prior: np.ndarray, rng: np.random.Generator, force_tie: bool) -> tuple[str, list[int]]:
    """Ten annotators' labels and the total: the majority, ties joined by ';' (true state first)."""
    if force_tie:
        other = int(rng.choice([c for c in range(len(prior)) if c != state]))
        votes = [state] * 5 + [other] * 5
        rng.shuffle(votes)
    else:
        noise = rng.choice(len(prior), size=N_EVALUATORS, p=prior)
        votes = np.where(rng.random(N_EVALUATORS) < 0.75, state, noise).tolist()
    counts = np.bincount(votes, minlength=len(prior))
    tied = [c for c in np.flatnonzero(counts == counts.max())]
    tied.sort(key=lambda c: (c != state, c))
    return ";".join(config.EMOTIONS[c] for c in tied), [int(v) for v in votes]


def ratings(state: int, column: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.rint(EMOTION_PARAMS[state, column] + rng.normal(0, 0.7, N_EVALUATORS)), 1, 5).astype(int)


def _seconds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def annotation_rows(utterances: list[Utterance], prior: np.ndarray, rng: np.random.Generator) -> list[str]:
    """The two header rows and one row per segment of a SessSS_eval.csv file."""
    header1 = ["Numb", "Wav", "", "Segment ID", "Total Evaluation", "", ""]
    header2 = [" ", "start", "end", " ", "Emotion", "Valence", "Arousal"]
    for name in EVALUATORS:
        header1 += [name, "", ""]
        header2 += ["Emotion", "Valence", "Arousal"]
    rows = [",".join(header1), ",".join(header2)]
    tie_at = int(rng.integers(len(utterances)))
    ordered = sorted(utterances, key=lambda u: (u.script, u.start))
    for number, utt in enumerate(ordered, start=1):
        total, votes = vote(utt.state, prior, rng, force_tie=number - 1 == tie_at)
        valence = ratings(utt.state, VALENCE_MEAN, rng)
        arousal = ratings(utt.state, AROUSAL_MEAN, rng)
        cells = [str(number), _seconds(utt.start), _seconds(utt.end), utt.segment_id, total,
                 f"{valence.mean():.1f}", f"{arousal.mean():.1f}"]
        for v, val, aro in zip(votes, valence, arousal, strict=True):
            cells += [config.EMOTIONS[v], str(val), str(aro)]
        rows.append(",".join(cells))
    return rows


# --------------------------------------------------------------------------- speech


def resonator(signal: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / sr)
    theta = 2 * np.pi * freq / sr
    return lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], signal)


def synthesize_speech(
    duration: float, state: int, intensity: float, speaker: dict, rng: np.random.Generator, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """Speech-like audio of `duration` seconds carrying the emotion `state` (see module docstring).
    `speaker`: f0 (Hz), formant and rate factors, gain (dB), tilt offset and background noise level."""
    p = EMOTION_PARAMS[0] + intensity * (EMOTION_PARAMS[state] - EMOTION_PARAMS[0])
    n = int(round(duration * sr))
    f0_level = speaker["f0"] * np.exp(rng.normal(0.0, UTTERANCE_SPREAD["f0"]))
    gain_db = speaker["gain"] + rng.normal(0.0, UTTERANCE_SPREAD["gain"])
    # Syllables with pauses: a loudness envelope and a vowel index per sample.
    rate = p[RATE] * speaker["rate"] * np.exp(rng.normal(0.0, UTTERANCE_SPREAD["rate"]))
    envelope = np.zeros(n)
    vowel = np.zeros(n, dtype=int)
    f0_targets_t, f0_targets = [0.0], [0.0]
    pos = int(rng.uniform(0.05, 0.25) * sr)
    while pos < n:
        length = int(sr / rate * rng.uniform(0.7, 1.3))
        stop = min(n, pos + length)
        envelope[pos:stop] = np.hanning(length)[: stop - pos] * rng.uniform(0.6, 1.0)
        vowel[pos:stop] = rng.integers(len(VOWEL_FORMANTS))
        f0_targets_t.append((pos + stop) / 2 / sr)
        f0_targets.append(rng.normal(0.0, p[F0_RANGE]))
        pos = stop + (int(rng.uniform(0.15, 0.5) * sr) if rng.random() < 0.15 else int(0.02 * sr))
    t = np.arange(n) / sr
    semitones = np.interp(t, f0_targets_t, f0_targets) - 1.5 * t / max(duration, 1e-6)
    f0 = f0_level * p[F0] * 2.0 ** (semitones / 12.0) * (1 + 0.01 * rng.standard_normal(n))
    phase = np.cumsum(f0 / sr)
    source = np.diff(np.floor(phase), prepend=0.0)
    tilt = min(0.98, p[TILT] + speaker["tilt"])
    source = lfilter([1 - tilt], [1, -tilt], source) * 20
    voiced = np.zeros(n)
    for v, formants in enumerate(VOWEL_FORMANTS):
        mask = vowel == v
        if not mask.any():
            continue
        filtered = sum(resonator(source, f * speaker["formant"], b, sr) for f, b in zip(formants, FORMANT_BANDWIDTHS,
                                                                                         strict=True))
        voiced[mask] = filtered[mask]
    breath = p[BREATH] * rng.standard_normal(n) * 0.3
    speech = (voiced + breath) * envelope
    speech /= np.abs(speech).max() + 1e-9
    gain = 10 ** ((p[GAIN] + gain_db) / 20) * 0.25
    background = lfilter([1.0], [1, -0.95], rng.standard_normal(n)) * speaker["noise"]
    return np.clip(speech * gain + background, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- bio signals


def state_timeline(times: np.ndarray, utterances: list[Utterance], speaker: int) -> np.ndarray:
    """The participant's emotion at each bio time: that of their latest utterance (neutral before)."""
    own = [u for u in utterances if u.speaker == speaker]
    starts = np.array([u.start for u in own])
    idx = np.searchsorted(starts, times, side="right") - 1
    states = np.array([u.state for u in own])
    return np.where(idx >= 0, states[np.clip(idx, 0, None)], 0)


# Magnitudes of the bio signals, with their sources in docs/synthetic-data.md.
EDA_LEVEL_US = (1.0, 1.0, 0.05, 15.0)  # responders' tonic level: log-normal median, log sd, clipped to [lo, hi]
NON_RESPONDER_SHARE = 0.15
NON_RESPONDER_LEVEL_US = (0.01, 0.08)  # log-uniform, flat near the floor
NS_SCR_PER_MIN = (1.0, 3.0)  # non-specific responses at rest, per responder (uniform)
SCR_LATENCY_S = (1.0, 3.0)  # from an utterance's start to the onset of its response
SCR_RISE_TAU_S = (0.5, 1.5)  # with SCR_DECAY_TAU_S, onset-to-peak times of about 1-3 s
SCR_DECAY_TAU_S = (3.0, 8.0)
SCR_AMPLITUDE_US = (0.04, 0.7)  # log-normal median at 1 µS (scaled by sqrt(level)) and log sd per response
EDA_DRIFT = (300.0, 0.25)  # multiplicative tonic drift: OU time constant (s) and log sd
DRIFT_SMOOTH_S = 30.0  # low-pass of the slow drifts: no jitter from one 4 Hz sample to the next
EDA_TREND_PER_10MIN = (-0.1, 0.15)  # log level change per 10 min (habituation on average): mean, sd
EDA_NOISE_US = 0.002
EDA_RESOLUTION_US = 0.0009  # Empatica E4: 1 digit ~ 900 pS
TEMP_LEVEL_C = (32.5, 1.2, 29.0, 35.0)  # wrist level across people: mean, sd, clipped to [lo, hi]
TEMP_DRIFT = (180.0, 0.25)  # room and vasomotor drift: OU time constant (s) and sd (°C)
TEMP_TREND_PER_10MIN = (0.2, 0.3)  # °C per 10 min (the device warming on the wrist): mean, sd
TEMP_NOISE_C = 0.01
TEMP_RESOLUTION_C = 0.02  # Empatica E4


def person_traits(name: str, noise: float, rng: np.random.Generator) -> dict:
    """A participant's speech and bio traits; the same number of draws for everyone."""
    gender = name[-1]
    level_eda = float(np.clip(EDA_LEVEL_US[0] * np.exp(rng.normal(0, EDA_LEVEL_US[1])), *EDA_LEVEL_US[2:]))
    floor_eda = float(np.exp(rng.uniform(*np.log(NON_RESPONDER_LEVEL_US))))
    responder = bool(rng.random() >= NON_RESPONDER_SHARE)
    scr_amplitude = SCR_AMPLITUDE_US[0] * np.sqrt(level_eda) * float(np.exp(rng.normal(0, 0.4)))
    ns_rate = float(rng.uniform(*NS_SCR_PER_MIN))
    return {
        "f0": SPEAKER_F0[gender] * float(np.exp(rng.normal(0, SPEAKER_SPREAD["f0"]))),
        "formant": 1.15 if gender == "F" else 1.0,
        "rate": float(np.exp(rng.normal(0, SPEAKER_SPREAD["rate"]))),
        "gain": float(rng.normal(0, SPEAKER_SPREAD["gain"])),
        "tilt": float(rng.uniform(-0.02, 0.02)),
        "noise": noise,
        "responder": responder,
        "eda_level": level_eda if responder else floor_eda,
        "scr_amplitude": scr_amplitude if responder else 0.05 * scr_amplitude,
        "ns_scr_per_min": ns_rate if responder else 0.1 * ns_rate,
        "eda_trend": float(rng.normal(*EDA_TREND_PER_10MIN)) / 600.0,
        "temp_level": float(np.clip(rng.normal(*TEMP_LEVEL_C[:2]), *TEMP_LEVEL_C[2:])),
        "temp_trend": float(rng.normal(*TEMP_TREND_PER_10MIN)) / 600.0,
    }


def smooth_drift(state: tuple[float, float, float] | None, clock: np.ndarray, tau: float, sd: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A slow drift (mean 0, stationary sd about `sd`) on the regular 4 Hz grid `clock`: an Ornstein-Uhlenbeck
    process of time constant `tau` s smoothed by a DRIFT_SMOOTH_S low-pass, so that it wanders over minutes
    without jitter from sample to sample. `state` (x, smoothed x, time) carries it on from the previous script,
    through the gap between them; None starts it from its stationary law. Returns the path and the new state."""
    step = config.BIO_STEP_S
    a, a_s = float(np.exp(-step / tau)), float(np.exp(-step / DRIFT_SMOOTH_S))
    sd_raw = sd * np.sqrt((tau + DRIFT_SMOOTH_S) / tau)
    if state is None:
        x = rng.normal(0, sd_raw)  # the stationary joint law: var(smooth) = cov(x, smooth) = sd ** 2
        smooth, t = x * (sd / sd_raw) ** 2 + rng.normal(0, sd * np.sqrt(1 - (sd / sd_raw) ** 2)), clock[0] - step
    else:
        x, smooth, t = state
    n = len(clock) + max(0, int(round((clock[0] - t) / step)) - 1)  # the gap, then the script
    raw = lfilter([1.0], [1, -a], sd_raw * np.sqrt(1 - a * a) * rng.standard_normal(n), zi=[a * x])[0]
    path = lfilter([1 - a_s], [1, -a_s], raw, zi=[a_s * smooth])[0]
    return path[-len(clock):], (float(raw[-1]), float(path[-1]), float(clock[-1]))


def scr_shape(seconds: np.ndarray, tau_rise: float, tau_decay: float) -> np.ndarray:
    """A skin-conductance response of peak 1 (bi-exponential, tau_rise < tau_decay), `seconds` after its onset."""
    peak_time = np.log(tau_decay / tau_rise) * tau_decay * tau_rise / (tau_decay - tau_rise)
    peak = np.exp(-peak_time / tau_decay) - np.exp(-peak_time / tau_rise)
    return (np.exp(-seconds / tau_decay) - np.exp(-seconds / tau_rise)) / peak


def eda_signal(times: np.ndarray, clock: np.ndarray, utterances: list[Utterance], speaker: int, person: dict,
               drift: dict, rng: np.random.Generator) -> np.ndarray:
    """EDA (µS) on `times` (s from the script's start; `clock` the same instants in seconds of the session):
    tonic level x multiplicative drift, non-specific responses, responses 1-3 s after the participant's own
    utterances (likelier and larger with arousal), sensor noise, E4 quantisation. `drift` carries the
    participant's drift state from script to script. The number of draws does not depend on the emotions."""
    n = len(times)
    fs = config.BIO_RATE_HZ
    log_drift, drift["eda"] = smooth_drift(drift.get("eda"), clock, *EDA_DRIFT, rng)
    tonic = person["eda_level"] * np.exp(log_drift + person["eda_trend"] * (clock - drift["start"]))
    arousal = EMOTION_PARAMS[state_timeline(times, utterances, speaker), AROUSAL]
    rate = person["ns_scr_per_min"] / 60.0 / fs * (1 + 0.5 * np.clip(arousal, 0, None))
    ns_events = rng.random(n) < rate
    ns_z, ns_rise, ns_decay = rng.standard_normal(n), rng.uniform(*SCR_RISE_TAU_S, n), rng.uniform(*SCR_DECAY_TAU_S, n)
    own = [u for u in utterances if u.speaker == speaker]
    m = len(own)
    u_resp, latency, ev_z = rng.random(m), rng.uniform(*SCR_LATENCY_S, m), rng.standard_normal(m)
    ev_rise, ev_decay = rng.uniform(*SCR_RISE_TAU_S, m), rng.uniform(*SCR_DECAY_TAU_S, m)
    onsets = [(i, 0.7 * np.exp(SCR_AMPLITUDE_US[1] * ns_z[i]), ns_rise[i], ns_decay[i])
              for i in np.flatnonzero(ns_events)]
    for j, utt in enumerate(own):
        drive = utt.intensity * EMOTION_PARAMS[utt.state, AROUSAL]
        if u_resp[j] < np.clip(0.3 + 0.4 * drive, 0.05, 0.9):
            i = int(np.searchsorted(times, utt.start + latency[j]))
            onsets.append((i, (1 + 0.5 * max(drive, 0.0)) * np.exp(SCR_AMPLITUDE_US[1] * ev_z[j]), ev_rise[j],
                           ev_decay[j]))
    phasic = np.zeros(n)
    k = np.arange(0, 30 * fs) / fs
    for i, size, rise, decay in onsets:
        if i < n:
            stop = min(n, i + len(k))
            phasic[i:stop] += person["scr_amplitude"] * size * scr_shape(k[: stop - i], rise, decay)
    noisy = tonic + phasic + rng.normal(0, EDA_NOISE_US, n)
    return np.clip(np.round(noisy / EDA_RESOLUTION_US) * EDA_RESOLUTION_US, 0.01, 30.0)


def temp_signal(clock: np.ndarray, person: dict, drift: dict, rng: np.random.Generator) -> np.ndarray:
    """Wrist temperature (°C) at `clock` (seconds of the session): the person's level, a trend, room and
    vasomotor drift carried from script to script in `drift`, sensor noise, quantised to the E4's 0.02 °C.
    No emotion enters it (none is documented at the scale of an utterance)."""
    wander, drift["temp"] = smooth_drift(drift.get("temp"), clock, *TEMP_DRIFT, rng)
    value = person["temp_level"] + person["temp_trend"] * (clock - drift["start"]) + wander
    value = value + rng.normal(0, TEMP_NOISE_C, len(clock))
    return np.round(np.round(value / TEMP_RESOLUTION_C) * TEMP_RESOLUTION_C, 2)


def temp_values(times: np.ndarray, clock: np.ndarray, utterances: list[Utterance], speaker: int, person: dict,
                drift: dict, rng: np.random.Generator) -> np.ndarray:
    """temp_signal as a SIGNALS entry: the temperature depends on the clock alone."""
    return temp_signal(clock, person, drift, rng)


Signal = Callable[[np.ndarray, np.ndarray, list[Utterance], int, dict, dict, np.random.Generator], np.ndarray]
# Each bio stream's synthetic signal (streams.BIO_STREAMS, by name): its values at `times` (s from the script's
# start), given the same instants in seconds of the session, the script's utterances, the participant's index,
# traits and drift state (carried from script to script) and the stream's random generator (stream_generators);
# and the format its values are written with.
SIGNALS: dict[str, tuple[Signal, str]] = {"eda": (eda_signal, ".6f"), "temp": (temp_values, ".2f")}


def stream_generators(session_seed: np.random.SeedSequence, rng: np.random.Generator,
                      temp_rng: np.random.Generator) -> dict[str, np.random.Generator]:
    """Each bio stream's random generator in a session: EDA draws from the session's `rng`, interleaved with the
    schedule's draws, TEMP from its own `temp_rng` (so that labels leave it unchanged), and any other stream from
    a child of `session_seed` of its own, spawned after the session's four, whose draws it leaves unchanged."""
    generators = {"eda": rng, "temp": temp_rng}
    for name in streams.names():
        if name not in generators:
            generators[name] = np.random.default_rng(session_seed.spawn(1)[0])
    return generators


def timestamp_strings(date: dt.date, seconds_of_day: np.ndarray) -> list[str]:
    """`YYYY-MMDD-HHMM-SS-mmm` strings for times given in seconds of day."""
    ms = np.rint(seconds_of_day * 1000).astype(np.int64)
    hh, rest = np.divmod(ms, 3_600_000)
    mm, rest = np.divmod(rest, 60_000)
    ss, mmm = np.divmod(rest, 1000)
    day = f"{date.year:04d}-{date.month:02d}{date.day:02d}"
    return [f"{day}-{h:02d}{m:02d}-{s:02d}-{x:03d}" for h, m, s, x in zip(hh, mm, ss, mmm, strict=True)]


def bio_lines(values: np.ndarray, stamps: list[str], labels: list[str], fmt: str, unix_start: float) -> str:
    """A bio CSV: two preamble lines, then `value,timestamp[,segment_id]` rows."""
    lines = [f"{unix_start:.6f}", f"{config.BIO_RATE_HZ:.6f}"]
    lines += [f"{v:{fmt}},{s},{lab}" if lab else f"{v:{fmt}},{s}" for v, s, lab in
              zip(values, stamps, labels, strict=True)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the dataset


def force_every_class(
    utterances: list[Utterance], split_of: dict[int, str | None], usable: set[tuple[int, int, int]],
    rng: np.random.Generator,
) -> None:
    """Make every class appear in every split among usable utterances (with both bio files)."""
    for split in ("train", "val", "test"):
        pool = [u for u in utterances if split_of[u.session] == split and (u.session, u.script, u.speaker) in usable]
        if not pool:
            continue
        present = {u.state for u in pool}
        for cls in range(config.NUM_CLASSES):
            if cls in present:
                continue
            counts = np.bincount([u.state for u in pool], minlength=config.NUM_CLASSES)
            donors = [u for u in pool if counts[u.state] > 1]
            chosen = donors[int(rng.integers(len(donors)))]
            chosen.state = cls
            present = {u.state for u in pool}


def make_dataset(
    out: Path, preset: str = "tiny", seed: int = 0, with_wav: bool = True, balance: str = "kemdy20",
    sessions: Sequence[int] | None = None,
) -> dict:
    """Write a synthetic KEMDy20 tree at `out` (which must not hold files yet), all or nothing.
    `sessions`: only these of the preset's sessions, each drawn as in the whole preset (its
    participants, scripts, signals and wavs; which bio files go missing, and the draws that give every
    class a test segment, are made among the sessions written). Returns a summary of what was written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise util.DataError("already exists and is not empty; choose another --out", out)
    spec = PRESETS[preset]
    if sessions is not None:
        unknown = sorted(set(sessions) - set(spec.sessions) - set(spec.temp_only_sessions))
        if unknown:
            raise ValueError(f"sessions {unknown} are not in the {preset} preset")
    missing = [name for name in streams.names() if name not in SIGNALS]
    if missing:
        raise ValueError(f"no synthetic signal for bio stream {missing[0]!r}: give it one in synthetic.SIGNALS")
    with util.atomic_dir(out) as tmp:
        summary = _write_dataset(tmp, spec, seed, with_wav, PRIORS[balance], preset,
                                 None if sessions is None else {int(s) for s in sessions})
    return {"root": out, **summary}


def _write_dataset(out: Path, spec: Preset, seed: int, with_wav: bool, prior: np.ndarray, preset: str,
                   only: set[int] | None = None) -> dict:
    seeds = np.random.SeedSequence(seed).spawn(len(spec.sessions) + len(spec.temp_only_sessions) + 1)
    rng_global = np.random.default_rng(seeds[-1])
    kept = [(s, ss) for s, ss in zip(spec.sessions, seeds, strict=False) if only is None or s in only]
    split_of = {s: util.split_of_session(s) for s, _ in kept}

    plans = []
    for session, ss in kept:
        # audio draws apart, so --no-wav leaves the rest unchanged; the third child (transcript words) leaves
        # the first two as they were (SeedSequence children are numbered)
        bio_seed, audio_seed, text_seed, temp_seed = ss.spawn(4)
        rng = np.random.default_rng(bio_seed)
        audio_rng = np.random.default_rng(audio_seed)
        text_rng = np.random.default_rng(text_seed)
        temp_rng = np.random.default_rng(temp_seed)
        names = participants(session, rng)
        noise = float(np.exp(rng.uniform(np.log(0.001), np.log(0.006))))  # the room's background, per session
        speakers = [person_traits(n, noise, rng) for n in names]
        scripts = []
        for script in range(1, spec.scripts + 1):
            utts, length = schedule_script(session, script, names, spec, prior, rng)
            scripts.append((script, utts, length))
        plans.append((session, rng, stream_generators(ss, rng, temp_rng), audio_rng, text_rng, names, speakers,
                      scripts))

    # Bio files missing for one stream, drawn from training sessions only.
    missing: dict[tuple[int, int, int], str] = {}
    candidates = [(s, c, p) for s, *_ in plans for c in range(1, spec.scripts + 1) for p in range(2)]
    train_candidates = [c for c in candidates if split_of[c[0]] == "train"]
    n_missing = min(int(round(spec.missing_share * len(candidates))), len(train_candidates))
    for idx in rng_global.choice(len(train_candidates), size=n_missing, replace=False):
        missing[train_candidates[idx]] = str(rng_global.choice(list(streams.folders())))
    usable = {c for c in candidates if c not in missing}
    force_every_class([u for p in plans for _, utts, _ in p[-1] for u in utts], split_of, usable, rng_global)

    n_segments = n_wavs = 0
    for session, rng, generators, audio_rng, text_rng, names, speakers, scripts in tqdm(
            plans, desc=f"synthetic {preset}", unit="session"):
        date = dt.date(2020, 8, 21) + dt.timedelta(days=(session - 1) // 2)
        all_utts = [u for _, utts, _ in scripts for u in utts]
        n_segments += len(all_utts)
        annotation = layout.annotation_path(out, session)
        annotation.parent.mkdir(parents=True, exist_ok=True)
        annotation.write_text(
            "\n".join(annotation_rows(all_utts, prior, rng)) + "\n", encoding="utf-8")
        clock = 9 * 3600 + 4 * int(rng.integers(0, 3600))
        drifts = [{"start": float(clock)} for _ in names]  # each participant's slow processes, script to script
        for script, utts, length in scripts:
            script_start = float(clock)  # whole seconds: on the 4 Hz grid
            clock += int(length) + 4 * int(rng.integers(30, 120))
            lead = 4 * int(rng.integers(5, 15)) * config.BIO_STEP_S
            times = np.arange(-lead, length + lead, config.BIO_STEP_S)
            stamps = timestamp_strings(date, script_start + times)
            unix_start = dt.datetime.combine(date, dt.time()).timestamp() + script_start - lead
            for p, name in enumerate(names):
                labels = [""] * len(times)
                for u in utts:
                    if u.speaker == p:
                        for i in np.flatnonzero((times >= u.start) & (times <= u.end)):
                            labels[i] = u.segment_id
                for stream in streams.BIO_STREAMS:
                    signal, fmt = SIGNALS[stream.name]
                    values = signal(times, script_start + times, utts, p, speakers[p], drifts[p],
                                    generators[stream.name])
                    if missing.get((session, script, p)) == stream.folder:
                        continue
                    path = layout.bio_path(out, stream.folder, session, script, name)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(
                        bio_lines(values, stamps, labels, fmt, unix_start))
            if with_wav:
                layout.session_dir(out, layout.WAV_DIR, session).mkdir(parents=True, exist_ok=True)
                for u in utts:
                    audio = synthesize_speech(u.end - u.start, u.state, u.intensity, speakers[u.speaker], audio_rng)
                    sf.write(layout.wav_path(out, u.segment_id), audio, SAMPLE_RATE, subtype="PCM_16")
                    filler = audio_rng.choice(KOREAN_WORDS, size=int(audio_rng.integers(3, 9)))
                    words = transcript_words(filler, u.state, text_rng)
                    layout.transcript_path(out, u.segment_id).write_bytes((" ".join(words) + "\n").encode("cp949"))
                    n_wavs += 1

    for session, ss in zip(spec.temp_only_sessions, seeds[len(spec.sessions):-1], strict=True):
        if only is not None and session not in only:
            continue
        rng = np.random.default_rng(ss)
        date = dt.date(2020, 8, 21) + dt.timedelta(days=(session - 1) // 2)
        times = np.arange(0, 120, config.BIO_STEP_S)
        stamps = timestamp_strings(date, 10 * 3600 + times)
        layout.session_dir(out, "TEMP", session).mkdir(parents=True, exist_ok=True)
        for name in participants(session, rng):
            person = person_traits(name, 0.0, rng)
            values = temp_signal(10 * 3600 + times, person, {"start": 10 * 3600.0}, rng)
            layout.bio_path(out, "TEMP", session, 1, name).write_text(
                bio_lines(values, stamps, [""] * len(times), ".2f", 0.0))
    return {"preset": preset, "seed": seed, "sessions": len(split_of),
            "segments": n_segments, "wavs": n_wavs, "missing_bio_files": len(missing)}
