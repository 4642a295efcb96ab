"""A synthetic dataset in the exact on-disk format of KEMDy20 (SPEC §2), with learnable signals.

Each participant's emotion is a sticky Markov state over their consecutive utterances in a script.
The state shapes three signals, none of which is enough on its own:

* speech: glottal pulses on a pitch contour, through vowel formant resonators, under a syllable-rate
  loudness envelope with pauses, plus breath and background noise; pitch level and range, loudness,
  tempo, spectral tilt and breathiness depend on the emotion (scaled by a per-utterance intensity)
  and on the speaker;
* EDA: a speaker's tonic level with slow drift plus skin-conductance responses whose rate and size
  rise with arousal (they lag the emotion, so context matters);
* TEMP: a slow drift that relaxes towards a small emotion-dependent offset (vasoconstriction in
  fear/anger), quantised to 0.01 °C.

Transcripts (wav/SessionSS/<segment ID>.txt, cp949) carry the emotion weakly: the utterance's 3-8
filler words are drawn as before from KOREAN_WORDS (which mixes neutral and emotional words), then each
word is replaced, with probability TEXT_EMOTION_SHARE (0.3), by a word typical of the utterance's true
emotion (EMOTION_WORDS). So about a third of the words point to the emotion and the rest are noise: the
words alone should not be enough, like each of the other signals. The replacements come from their own
random stream per session (a third child of the session's seed), so the wav, EDA, TEMP and annotation
files are byte for byte those of the generator before transcripts carried emotion.

Annotators vote with noise; ties are written as `a;b`. Everything is drawn from one seed, per
session, so the same seed gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter
from tqdm import tqdm

from encoder.core import config, util

SAMPLE_RATE = 16000
N_EVALUATORS = 10
EVALUATORS = [f"Eval{i:02d}{'F' if i % 2 else 'M'}" for i in range(1, N_EVALUATORS + 1)]

PRIORS = {
    "kemdy20": np.array([0.55, 0.15, 0.08, 0.07, 0.07, 0.04, 0.04]),
    "uniform": np.full(config.NUM_CLASSES, 1.0 / config.NUM_CLASSES),
}

# Per emotion (config.EMOTIONS order): pitch factor, pitch range (semitones), gain (dB), syllables/s,
# source low-pass coefficient (higher = darker), breathiness, arousal, temperature offset (°C),
# mean valence and arousal ratings.
EMOTION_PARAMS = np.array(
    [
        # f0    range gain  rate  tilt  breath arousal temp   val  aro
        [1.00, 1.5, 0.0, 4.2, 0.90, 0.05, 0.0, 0.00, 3.0, 2.8],  # neutral
        [1.18, 3.5, 3.0, 4.9, 0.85, 0.05, 0.5, 0.15, 4.2, 3.5],  # happy
        [1.30, 4.5, 2.0, 4.4, 0.86, 0.08, 0.8, -0.10, 3.5, 4.0],  # surprise
        [1.10, 2.5, 6.0, 5.3, 0.75, 0.03, 1.0, -0.25, 1.8, 4.3],  # angry
        [0.88, 0.8, -5.0, 3.1, 0.95, 0.15, -0.4, -0.10, 1.8, 2.2],  # sad
        [0.95, 1.8, -1.0, 3.6, 0.92, 0.10, 0.3, -0.15, 2.0, 3.0],  # disqust
        [1.25, 2.0, -2.0, 5.7, 0.93, 0.20, 0.8, -0.35, 2.0, 3.8],  # fear
    ]
)
F0, F0_RANGE, GAIN, RATE, TILT, BREATH, AROUSAL, TEMP_OFFSET, VALENCE_MEAN, AROUSAL_MEAN = range(10)

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


# Words typical of each emotion (config.EMOTIONS order) that replace filler words of a transcript.
EMOTION_WORDS = (
    ("그렇군요", "네", "알겠습니다", "보통이에요", "그냥", "회의", "일정", "확인했어요"),  # neutral
    ("기뻐요", "행복해요", "신나요", "좋아요", "최고예요", "웃겨요", "즐거워요", "고마워요"),  # happy
    ("깜짝", "어머", "정말요", "세상에", "놀랐어요", "갑자기", "대박", "설마"),  # surprise
    ("화가", "짜증나요", "어이없어요", "그만해", "답답해요", "열받아요", "싫어요", "왜그래"),  # angry
    ("슬퍼요", "눈물이", "우울해요", "외로워요", "힘들어요", "그리워요", "속상해요", "미안해요"),  # sad
    ("역겨워요", "더러워요", "징그러워요", "토할", "불쾌해요", "싫다", "냄새", "끔찍해요"),  # disqust
    ("무서워요", "겁나요", "떨려요", "불안해요", "두려워요", "위험해요", "도망가", "소름"),  # fear
)
TEXT_EMOTION_SHARE = 0.3  # chance that a transcript word is replaced by one of its emotion's words


def transcript_words(filler: np.ndarray, state: int, rng: np.random.Generator) -> list[str]:
    """The words of a transcript: each filler word, or with probability TEXT_EMOTION_SHARE a word of
    EMOTION_WORDS[state] (drawn from `rng`, the session's text stream)."""
    replace = rng.random(len(filler)) < TEXT_EMOTION_SHARE
    typical = rng.choice(EMOTION_WORDS[state], size=len(filler))
    return [str(t) if r else str(f) for f, t, r in zip(filler, typical, replace, strict=True)]


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
                f"Sess{session:02d}_script{script:02d}_{names[speaker]}_{k + 1:03d}",
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
    """Speech-like audio of `duration` seconds carrying the emotion `state` (see module docstring)."""
    p = EMOTION_PARAMS[0] + intensity * (EMOTION_PARAMS[state] - EMOTION_PARAMS[0])
    n = int(round(duration * sr))
    # Syllables with pauses: a loudness envelope and a vowel index per sample.
    rate = p[RATE] * speaker["rate"]
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
    f0 = speaker["f0"] * p[F0] * 2.0 ** (semitones / 12.0) * (1 + 0.01 * rng.standard_normal(n))
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
    gain = 10 ** ((p[GAIN] + speaker["gain"]) / 20) * 0.25
    background = lfilter([1.0], [1, -0.95], rng.standard_normal(n)) * 0.002
    return np.clip(speech * gain + background, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- bio signals


def state_timeline(times: np.ndarray, utterances: list[Utterance], speaker: int) -> np.ndarray:
    """The participant's emotion at each bio time: that of their latest utterance (neutral before)."""
    own = [u for u in utterances if u.speaker == speaker]
    starts = np.array([u.start for u in own])
    idx = np.searchsorted(starts, times, side="right") - 1
    states = np.array([u.state for u in own])
    return np.where(idx >= 0, states[np.clip(idx, 0, None)], 0)


def eda_signal(states: np.ndarray, person: dict, rng: np.random.Generator) -> np.ndarray:
    n = len(states)
    fs = config.BIO_RATE_HZ
    arousal = EMOTION_PARAMS[states, AROUSAL]
    drift = 1 + 0.1 * np.cumsum(rng.normal(0, 0.02, n)) / np.sqrt(np.arange(1, n + 1))
    tonic = person["eda_base"] * drift * (1 + 0.08 * lfilter([0.02], [1, -0.98], arousal))
    rate = (0.03 + 0.12 * np.clip(arousal, 0, None)) / fs
    events = (rng.random(n) < rate) * rng.exponential(0.05 + 0.3 * np.clip(arousal, 0, None)) * person["scr_gain"]
    k = np.arange(0, 20 * fs) / fs
    kernel = np.exp(-k / 2.0) - np.exp(-k / 0.75)
    phasic = np.convolve(events, kernel)[:n]
    return np.clip(tonic + phasic + rng.normal(0, 0.004, n), 0.01, None)


def temp_signal(states: np.ndarray, person: dict, rng: np.random.Generator) -> np.ndarray:
    n = len(states)
    fs = config.BIO_RATE_HZ
    target = person["temp_base"] + EMOTION_PARAMS[states, TEMP_OFFSET]
    alpha = np.exp(-1.0 / (8.0 * fs))  # relaxes towards the target with an 8 s time constant
    relaxed = lfilter([1 - alpha], [1, -alpha], target, zi=[alpha * target[0]])[0]
    drift = np.cumsum(rng.normal(0, 0.003, n))
    return np.round(relaxed + drift + rng.normal(0, 0.01, n), 2)


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
    out: Path, preset: str = "tiny", seed: int = 0, with_wav: bool = True, balance: str = "kemdy20"
) -> dict:
    """Write a synthetic KEMDy20 tree at `out` (which must not hold files yet), all or nothing.
    Returns a summary of what was written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise util.DataError("already exists and is not empty; choose another --out", out)
    with util.atomic_dir(out) as tmp:
        summary = _write_dataset(tmp, PRESETS[preset], seed, with_wav, PRIORS[balance], preset)
    return {"root": out, **summary}


def _write_dataset(out: Path, spec: Preset, seed: int, with_wav: bool, prior: np.ndarray, preset: str) -> dict:
    seeds = np.random.SeedSequence(seed).spawn(len(spec.sessions) + len(spec.temp_only_sessions) + 1)
    rng_global = np.random.default_rng(seeds[-1])
    split_of = {s: util.split_of_session(s) for s in spec.sessions}

    plans = []
    for session, ss in zip(spec.sessions, seeds, strict=False):
        # audio draws apart, so --no-wav leaves the rest unchanged; the third child (transcript words) leaves
        # the first two as they were (SeedSequence children are numbered)
        bio_seed, audio_seed, text_seed = ss.spawn(3)
        rng = np.random.default_rng(bio_seed)
        audio_rng = np.random.default_rng(audio_seed)
        text_rng = np.random.default_rng(text_seed)
        names = participants(session, rng)
        speakers = [
            {"f0": (rng.uniform(170, 240) if n.endswith("F") else rng.uniform(95, 140)),
             "formant": 1.15 if n.endswith("F") else 1.0, "rate": rng.uniform(0.9, 1.1),
             "gain": rng.uniform(-2, 2), "tilt": rng.uniform(-0.02, 0.02),
             "eda_base": rng.uniform(0.5, 8.0), "scr_gain": rng.uniform(0.5, 1.5),
             "temp_base": rng.uniform(31.0, 35.0)}
            for n in names
        ]
        scripts = []
        for script in range(1, spec.scripts + 1):
            utts, length = schedule_script(session, script, names, spec, prior, rng)
            scripts.append((script, utts, length))
        plans.append((session, rng, audio_rng, text_rng, names, speakers, scripts))

    # Bio files missing for one modality, drawn from training sessions only.
    missing: dict[tuple[int, int, int], str] = {}
    candidates = [(s, c, p) for s, *_ in plans for c in range(1, spec.scripts + 1) for p in range(2)]
    n_missing = int(round(spec.missing_share * len(candidates)))
    train_candidates = [c for c in candidates if split_of[c[0]] == "train"]
    for idx in rng_global.choice(len(train_candidates), size=n_missing, replace=False):
        missing[train_candidates[idx]] = str(rng_global.choice(["EDA", "TEMP"]))
    usable = {c for c in candidates if c not in missing}
    force_every_class([u for p in plans for _, utts, _ in p[-1] for u in utts], split_of, usable, rng_global)

    n_segments = n_wavs = 0
    for session, rng, audio_rng, text_rng, names, speakers, scripts in tqdm(plans, desc=f"synthetic {preset}",
                                                                            unit="session"):
        date = dt.date(2020, 8, 21) + dt.timedelta(days=(session - 1) // 2)
        all_utts = [u for _, utts, _ in scripts for u in utts]
        n_segments += len(all_utts)
        (out / "annotation").mkdir(parents=True, exist_ok=True)
        (out / "annotation" / f"Sess{session:02d}_eval.csv").write_text(
            "\n".join(annotation_rows(all_utts, prior, rng)) + "\n", encoding="utf-8")
        clock = 9 * 3600 + 4 * int(rng.integers(0, 3600))
        for script, utts, length in scripts:
            script_start = float(clock)  # whole seconds: on the 4 Hz grid
            clock += int(length) + 4 * int(rng.integers(30, 120))
            lead = 4 * int(rng.integers(5, 15)) * config.BIO_STEP_S
            times = np.arange(-lead, length + lead, config.BIO_STEP_S)
            stamps = timestamp_strings(date, script_start + times)
            unix_start = dt.datetime.combine(date, dt.time()).timestamp() + script_start - lead
            for p, name in enumerate(names):
                states = state_timeline(times, utts, p)
                labels = [""] * len(times)
                for u in utts:
                    if u.speaker == p:
                        for i in np.flatnonzero((times >= u.start) & (times <= u.end)):
                            labels[i] = u.segment_id
                signals = {"EDA": (eda_signal(states, speakers[p], rng), ".6f"),
                           "TEMP": (temp_signal(states, speakers[p], rng), ".2f")}
                for modality, (values, fmt) in signals.items():
                    if missing.get((session, script, p)) == modality:
                        continue
                    folder = out / modality / f"Session{session:02d}"
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"Sess{session:02d}_script{script:02d}_{name}.csv").write_text(
                        bio_lines(values, stamps, labels, fmt, unix_start))
            if with_wav:
                folder = out / "wav" / f"Session{session:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                for u in utts:
                    audio = synthesize_speech(u.end - u.start, u.state, u.intensity, speakers[u.speaker], audio_rng)
                    sf.write(folder / f"{u.segment_id}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
                    filler = audio_rng.choice(KOREAN_WORDS, size=int(audio_rng.integers(3, 9)))
                    words = transcript_words(filler, u.state, text_rng)
                    (folder / f"{u.segment_id}.txt").write_bytes((" ".join(words) + "\n").encode("cp949"))
                    n_wavs += 1

    for session, ss in zip(spec.temp_only_sessions, seeds[len(spec.sessions):-1], strict=True):
        rng = np.random.default_rng(ss)
        date = dt.date(2020, 8, 21) + dt.timedelta(days=(session - 1) // 2)
        times = np.arange(0, 120, config.BIO_STEP_S)
        stamps = timestamp_strings(date, 10 * 3600 + times)
        person = {"temp_base": rng.uniform(31, 35)}
        folder = out / "TEMP" / f"Session{session:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in participants(session, rng):
            values = temp_signal(np.zeros(len(times), dtype=int), person, rng)
            (folder / f"Sess{session:02d}_script01_{name}.csv").write_text(
                bio_lines(values, stamps, [""] * len(times), ".2f", 0.0))
    return {"preset": preset, "seed": seed, "sessions": len(spec.sessions),
            "segments": n_segments, "wavs": n_wavs, "missing_bio_files": len(missing)}
