"""Reading a KEMDy20 download: annotation CSVs, the bio streams' CSVs (EDA, TEMP: streams.BIO_STREAMS), the
wav layout and transcripts (docs/kemdy20.md).

Every reader checks its input and raises util.DataError naming the file and, where it applies, the
line number in that file (1-based, header and preamble lines included). Transcripts are the exception:
a missing or undecodable one is not an error (the segment's audio and bio signals are fine); the reader
says which (`status`) and the dataframe stage keeps the segment with an empty transcript.

A transcript's bytes are read as strict UTF-8 and as cp949 (a leading byte-order mark dropped); when
both are valid, the reading with more Hangul minus Hanja wins, a tie going to UTF-8 (docs/kemdy20.md
says why this tells the two apart). Transcription marks (the ETRI/KsponSpeech conventions) are stripped
to plain words and counted by kind (`TRANSCRIPT_MARKS`): `(A)/(B)` -> A; the tags `b/ l/ n/ o/ u/` at
a word's start removed; any other `/`, `+`, `*` and leftover parentheses removed with the word kept;
whitespace collapsed; punctuation kept.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from encoder.core import config, layout, streams, util

ANNOTATION_GLOB = "Sess[0-9][0-9]_eval.csv"
BIO_PREAMBLE_LINES = 2
TIMESTAMP_LEN = 21  # YYYY-MMDD-HHMM-SS-mmm
_TIMESTAMP_DASHES = (4, 9, 14, 17)
_SESSION_DIR_RE = re.compile(r"^Session(\d{2})$")


def session_of_file(path: Path) -> int:
    """Session number of an annotation file (`Sess01_eval.csv`) or a bio file (`Sess01_script01_...`)."""
    match = re.match(r"^Sess(\d{2})_", path.name)
    if match is None:
        raise util.DataError("file name does not start with SessSS_", path)
    return int(match.group(1))


TRANSCRIPT_ENCODINGS = ("utf-8", "cp949")  # tried in this order; see the module docstring
TRANSCRIPT_STATUSES = ("ok", "missing", "undecodable")
TRANSCRIPT_MARKS = ("dual", "noise", "slash", "plus", "star", "parenthesis")
_DUAL_RE = re.compile(r"\(([^()/]*)\)\s*/\s*\(([^()]*)\)")
_NOISE_RE = re.compile(r"(?<![^\s(])[blnou]/")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff]")
_HANJA = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD_TWO_BYTE = re.compile("[A-Za-z][\u0080-\u07ff]|[\u0080-\u07ff][A-Za-z]")


def _korean_score(text: str) -> int:
    """Hangul characters minus Hanja: how much a reading of transcript bytes looks like Korean."""
    return len(_HANGUL.findall(text)) - len(_HANJA.findall(text))


def decode_transcript(data: bytes) -> tuple[str | None, str | None]:
    """(text, encoding) of transcript bytes, (None, None) when neither UTF-8 nor cp949 decodes them.
    When both do, the reading with the higher Korean score wins, ties to UTF-8 (module docstring)."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    readings = {}
    for encoding in TRANSCRIPT_ENCODINGS:
        try:
            readings[encoding] = data.decode(encoding)
        except UnicodeDecodeError:
            continue
    if len(readings) < 2:
        return next(((text, encoding) for encoding, text in readings.items()), (None, None))
    utf8, cp949 = readings["utf-8"], readings["cp949"]
    utf8_score, cp949_score = _korean_score(utf8), _korean_score(cp949)
    latin_word = not _HANGUL.search(utf8) and _LATIN_WORD_TWO_BYTE.search(utf8)
    if cp949_score > utf8_score and not latin_word:
        return cp949, "cp949"
    return utf8, "utf-8"


def clean_transcript(text: str) -> tuple[str, dict[str, int]]:
    """`text` with its transcription marks stripped to plain words (rule in the module docstring) and
    the number of marks of each kind (TRANSCRIPT_MARKS) removed."""
    counts = dict.fromkeys(TRANSCRIPT_MARKS, 0)
    text, counts["dual"] = _DUAL_RE.subn(r"\1", text)
    text, counts["noise"] = _NOISE_RE.subn(" ", text)
    for kind, mark in (("slash", "/"), ("plus", "+"), ("star", "*")):
        counts[kind] = text.count(mark)
        text = text.replace(mark, " " if kind == "slash" else "")
    counts["parenthesis"] = text.count("(") + text.count(")")
    text = text.replace("(", " ").replace(")", " ")
    return " ".join(text.split()), counts


def read_transcript(root: Path, segment_id: str) -> tuple[str, str, str | None, dict[str, int]]:
    """A segment's transcript: (plain text, status, encoding, marks removed). status is `ok`, `missing`
    (no readable file) or `undecodable` (neither UTF-8 nor cp949); the text is "" unless `ok`."""
    path = layout.transcript_path(root, segment_id)
    try:
        data = path.read_bytes()
    except OSError:
        return "", "missing", None, dict.fromkeys(TRANSCRIPT_MARKS, 0)
    text, encoding = decode_transcript(data)
    if text is None:
        return "", "undecodable", None, dict.fromkeys(TRANSCRIPT_MARKS, 0)
    plain, marks = clean_transcript(text)
    return plain, "ok", encoding, marks


def check_root(root: Path, require_annotation: bool = True) -> list[Path]:
    """The annotation files of a KEMDy20 root; a clear error when the root is missing or empty.
    With `require_annotation` False (prediction on new recordings) a root without annotation files
    is fine when it holds segment wavs (wav/SessionSS/*.wav)."""
    root = Path(root)
    if not root.is_dir():
        raise util.DataError("dataset root not found (set KEMDY20_ROOT in encoder/core/config.py or --root)", root)
    files = sorted((root / "annotation").glob(ANNOTATION_GLOB))
    if not files and require_annotation:
        raise util.DataError("no annotation/SessSS_eval.csv files: not a KEMDy20 root, or empty", root)
    if not files and not wav_files(root):
        raise util.DataError("no annotation/SessSS_eval.csv files and no wav/SessionSS/*.wav files: not a folder "
                             "in the KEMDy20 layout, or empty", root)
    return files


def parse_emotions(value: str) -> list[int]:
    """Class indices of a total-evaluation cell, in listed order (`neutral;happy` -> [0, 1])."""
    labels = [part.strip() for part in str(value).split(";")]
    unknown = [lab for lab in labels if lab not in config.EMOTIONS]
    if unknown:
        raise ValueError(f"unknown emotion label {unknown[0]!r} (expected one of {', '.join(config.EMOTIONS)})")
    return [config.EMOTIONS.index(lab) for lab in labels]


def multi_hot(classes: list[int]) -> np.ndarray:
    vector = np.zeros(config.NUM_CLASSES, dtype=np.int64)
    vector[classes] = 1
    return vector


def evaluator_votes(cells: list[str]) -> str:
    """The evaluators' emotion cells of one segment as vote counts per class (`emotion_votes`: 7 numbers
    joined by spaces); a cell listing several labels (`neutral;happy`) shares its vote among them. An empty
    cell, or one naming no known emotion, casts no vote: the votes are an optional training target
    (dataset.training_label), and a stray cell must not stop a run that uses the totals. "" when no cell
    votes."""
    votes = np.zeros(config.NUM_CLASSES)
    for cell in cells:
        try:
            classes = parse_emotions(cell) if cell.strip() else []
        except ValueError:
            continue
        for c in classes:
            votes[c] += 1.0 / len(classes)
    return " ".join(f"{v:g}" for v in votes) if votes.sum() > 0 else ""


def _evaluator_columns(table: pd.DataFrame) -> list[int]:
    """Columns of the evaluators' emotion cells: 7, 10, ... while the second header row says `Emotion`."""
    columns, col = [], 7
    while col < table.shape[1] and table.iat[1, col].strip() == "Emotion":
        columns.append(col)
        col += 3
    return columns


def read_annotation(path: Path, labels_required: bool = True) -> pd.DataFrame:
    """One annotation file -> one row per segment: segment ID, session, identity, wav start/end,
    total emotion (raw string), its multi-hot, the first listed label (`target`), valence, arousal, and
    the evaluators' votes (`emotion_votes`, evaluator_votes).

    With `labels_required` False (prediction on new recordings) the label fields (emotion, valence,
    arousal) and wav start/end may be empty: an unlabelled row has emotion "", emotion_one_hot "",
    target <NA> (column dtype Int64) and NaN valence/arousal; a row without wav start or end has NaN
    for both. A field that is present but malformed is an error either way."""
    path = Path(path)
    try:
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise util.DataError(f"cannot parse annotation CSV ({str(err).splitlines()[0]})", path) from None
    expected = (("Numb", 0), ("Segment ID", 3), ("Total Evaluation", 4))
    if (
        len(table) < 2
        or table.shape[1] < 7
        or any(table.iat[0, col].strip() != name for name, col in expected)
        or [table.iat[1, c].strip() for c in (1, 2, 4, 5, 6)] != ["start", "end", "Emotion", "Valence", "Arousal"]
    ):
        raise util.DataError(
            "annotation header rows missing or wrong: expected 'Numb,Wav,,Segment ID,Total Evaluation,...' "
            "then ' ,start,end, ,Emotion,Valence,Arousal,...'", path, 1)
    evaluators = _evaluator_columns(table)
    votes = [evaluator_votes(list(cells)) for cells in table.iloc[2:, evaluators].itertuples(index=False)]
    body = table.iloc[2:, :7].copy()
    body.columns = ["Numb", "wav_start", "wav_end", "segment_id", "emotion", "valence", "arousal"]
    body["emotion_votes"] = votes
    body["line"] = np.arange(3, 3 + len(body))
    body = body[body["segment_id"].str.len() > 0]
    session = session_of_file(path)
    ids = body["segment_id"].str.strip()
    valid = ids.str.fullmatch(util.SEGMENT_ID_RE.pattern.strip("^$"))
    if not valid.all():
        bad = body[~valid].iloc[0]
        raise util.DataError(f"malformed segment ID {bad['segment_id']!r}", path, int(bad["line"]))
    other = ids.str[4:6].astype(int) != session
    if other.any():
        bad = body[other].iloc[0]
        raise util.DataError(f"segment {bad['segment_id']} belongs to another session", path, int(bad["line"]))
    fields = ["wav_start", "wav_end", "valence", "arousal"]
    numbers = body[fields].apply(pd.to_numeric, errors="coerce")
    if labels_required:
        bad_rows = numbers.isna().any(axis=1) | (numbers["wav_end"] <= numbers["wav_start"])
        if bad_rows.any():
            line = int(body.loc[bad_rows.idxmax(), "line"])
            raise util.DataError("wav start/end or valence/arousal missing, non-numeric or out of order", path, line)
    else:
        numbers = _optional_numbers(body, numbers, fields, path)
    emotions = body["emotion"].str.strip()
    classes: list[list[int] | None] = []
    for raw, line in zip(emotions, body["line"], strict=True):
        try:
            classes.append(None if raw == "" and not labels_required else parse_emotions(raw))
        except ValueError as err:
            raise util.DataError(str(err), path, int(line)) from None
    targets = [c[0] if c is not None else None for c in classes]
    return pd.DataFrame({
        "Numb": pd.to_numeric(body["Numb"], errors="coerce").astype("Int64").to_numpy(),
        "wav_start": numbers["wav_start"].to_numpy(),
        "wav_end": numbers["wav_end"].to_numpy(),
        "segment_id": ids.to_numpy(),
        "session": session,
        "identity": ids.str.extract(util.SEGMENT_ID_RE)[2].to_numpy(),
        "emotion": emotions.to_numpy(),
        "valence": numbers["valence"].to_numpy(),
        "arousal": numbers["arousal"].to_numpy(),
        "emotion_one_hot": [" ".join(map(str, multi_hot(c))) if c is not None else "" for c in classes],
        "target": (np.array(targets, dtype=np.int64) if labels_required else pd.array(targets, dtype="Int64")),
        "emotion_votes": body["emotion_votes"].to_numpy(),
    })


def _optional_numbers(body: pd.DataFrame, numbers: pd.DataFrame, fields: list[str], path: Path) -> pd.DataFrame:
    """Numeric fields where empty is allowed (unknown) but a malformed value is an error naming the row;
    wav start/end are kept only as a pair (either missing: both NaN) and must be in order."""
    for name in fields:
        raw = body[name].str.strip()
        malformed = numbers[name].isna() & (raw != "")
        if malformed.any():
            line = int(body.loc[malformed.idxmax(), "line"])
            raise util.DataError(f"{name.replace('_', ' ')} {raw[malformed].iloc[0]!r} is not a number", path, line)
    numbers = numbers.copy()
    partial = numbers["wav_start"].isna() | numbers["wav_end"].isna()
    numbers.loc[partial, ["wav_start", "wav_end"]] = np.nan
    disordered = numbers["wav_end"] <= numbers["wav_start"]
    if disordered.any():
        line = int(body.loc[disordered.idxmax(), "line"])
        raise util.DataError("wav end is not after wav start", path, line)
    return numbers


def wav_segments(root: Path, skip_sessions: set[int]) -> pd.DataFrame:
    """Segment rows from the wav files alone (prediction on recordings without an annotation): one per
    wav/SessionSS/<segment ID>.wav of a session not in `skip_sessions`, in read_annotation's columns with
    unknown labels and wav start/end (NaN). A wav whose name is not a segment ID of its session folder
    is an error naming it."""
    rows = []
    for path in wav_files(root):
        session = int(path.parent.name.removeprefix("Session"))  # wav_files lists SessionSS folders only
        if session in skip_sessions:
            continue
        match = util.SEGMENT_ID_RE.match(path.stem)
        if match is None or int(match.group(1)) != session:
            raise util.DataError(f"wav file name is not a segment ID of {path.parent.name} "
                                 "(SessSS_scriptCC_UserUUUG_KKK.wav)", path)
        rows.append((path.stem, session, match.group(3)))
    return pd.DataFrame({
        "Numb": pd.array([pd.NA] * len(rows), dtype="Int64"),
        "wav_start": np.full(len(rows), np.nan),
        "wav_end": np.full(len(rows), np.nan),
        "segment_id": [r[0] for r in rows],
        "session": np.array([r[1] for r in rows], dtype=np.int64),
        "identity": [r[2] for r in rows],
        "emotion": [""] * len(rows),
        "valence": np.full(len(rows), np.nan),
        "arousal": np.full(len(rows), np.nan),
        "emotion_one_hot": [""] * len(rows),
        "target": pd.array([pd.NA] * len(rows), dtype="Int64"),
        "emotion_votes": [""] * len(rows),
    })


def parse_timestamps(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of day of `YYYY-MMDD-HHMM-SS-mmm` strings, vectorised over their characters.
    Returns (seconds, valid mask); seconds are NaN where the string is malformed."""
    text = np.asarray(stamps, dtype=f"U{TIMESTAMP_LEN}")
    codes = text.view(np.uint32).reshape(len(text), TIMESTAMP_LEN).astype(np.int64) - ord("0")
    is_dash = np.zeros(TIMESTAMP_LEN, dtype=bool)
    is_dash[list(_TIMESTAMP_DASHES)] = True
    valid = (np.char.str_len(np.asarray(stamps, dtype=str)) == TIMESTAMP_LEN)
    valid &= (codes[:, is_dash] == ord("-") - ord("0")).all(axis=1)
    valid &= ((codes[:, ~is_dash] >= 0) & (codes[:, ~is_dash] <= 9)).all(axis=1)

    def number(*positions: int) -> np.ndarray:
        value = np.zeros(len(text), dtype=np.int64)
        for p in positions:
            value = value * 10 + codes[:, p]
        return value

    hours, minutes, seconds, millis = number(10, 11), number(12, 13), number(15, 16), number(18, 19, 20)
    valid &= (hours < 24) & (minutes < 60) & (seconds < 60)
    total = hours * 3600 + minutes * 60 + seconds + millis / 1000.0
    return np.where(valid, total, np.nan), valid


def read_bio(path: Path, modality: str) -> pd.DataFrame:
    """One file of the bio stream whose folder is `modality` (EDA, TEMP, ...) -> its rows inside annotated
    segments: `{modality}_value`, `ts` (seconds of day) and `segment_id` (the segment ID). Rows outside
    segments are read, checked, dropped."""
    path = Path(path)
    value_name = f"{modality}_value"
    try:
        table = pd.read_csv(path, header=None, skiprows=BIO_PREAMBLE_LINES, names=["value", "ts", "segment_id"],
                            dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame({value_name: [], "ts": [], "segment_id": []})
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise util.DataError(f"cannot parse {modality} CSV ({str(err).splitlines()[0]})", path) from None
    values = pd.to_numeric(table["value"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise util.DataError(f"non-numeric or NaN {modality} value {table['value'].iat[i]!r}", path,
                             i + 1 + BIO_PREAMBLE_LINES)
    seconds, valid = parse_timestamps(table["ts"].to_numpy())
    if not valid.all():
        i = int(np.argmax(~valid))
        raise util.DataError(f"malformed timestamp {table['ts'].iat[i]!r} (expected YYYY-MMDD-HHMM-SS-mmm)",
                             path, i + 1 + BIO_PREAMBLE_LINES)
    inside = (table["segment_id"].str.len() > 0).to_numpy()
    return pd.DataFrame({value_name: values[inside], "ts": seconds[inside],
                         "segment_id": table["segment_id"].to_numpy()[inside]})


def session_folders(root: Path, folder: str) -> list[Path]:
    """root/<folder>/SessionSS/ folders (exactly two digits), sorted."""
    return sorted(d for d in (Path(root) / folder).glob("Session*") if _SESSION_DIR_RE.match(d.name))


def _session_files(root: Path, folder: str, pattern: str) -> list[Path]:
    return sorted(p for d in session_folders(root, folder) for p in d.glob(pattern))


def bio_files(root: Path, modality: str) -> list[Path]:
    """All CSVs of one modality under root/<modality>/SessionSS/."""
    return _session_files(root, modality, "*.csv")


def wav_files(root: Path) -> list[Path]:
    """Every root/wav/SessionSS/*.wav, sorted."""
    return _session_files(root, "wav", "*.wav")


def transcript_files(root: Path) -> list[Path]:
    """Every root/wav/SessionSS/*.txt, sorted."""
    return _session_files(root, "wav", "*.txt")


def sessions_present(root: Path) -> set[int]:
    """Sessions that have an annotation file or a SessionSS folder under wav/ or a bio stream's folder."""
    root = Path(root)
    found = {session_of_file(p) for p in (root / "annotation").glob(ANNOTATION_GLOB)}
    for folder in ("wav", *streams.folders()):
        found |= {int(d.name.removeprefix("Session")) for d in session_folders(root, folder)}
    return found


def wav_index(root: Path) -> set[str]:
    """Segment IDs that have a wav file (one directory listing per session)."""
    return {p.stem for p in (Path(root) / "wav").glob("Session*/*.wav")}


def fingerprint(root: Path) -> str:
    """A digest of every file the dataframe stage reads: annotation/SessSS_eval.csv, every bio stream's
    SessionSS/*.csv (EDA, TEMP), the wav listing and the transcripts (wav/SessionSS/*.txt), by relative path, size
    and mtime_ns (one stat per file, no content read), so adding, removing, touching or editing any of
    them changes it."""
    root = Path(root)
    files = sorted((root / "annotation").glob(ANNOTATION_GLOB))
    files += [p for modality in streams.folders() for p in bio_files(root, modality)] + wav_files(root)
    files += transcript_files(root)
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
