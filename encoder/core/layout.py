"""On-disk names shared by the modules that write a file and the modules that read it.

The KEMDy20 tree (read by kemdy20.py, written by the synthetic generator):

    annotation/SessSS_eval.csv
    wav/SessionSS/<segment ID>.wav and .txt (the transcript)
    EDA/SessionSS/SessSS_scriptNN_<participant>.csv, TEMP/... the same

with segment IDs `SessSS_scriptNN_<participant>_III` and participants `UserNNNG` (G: F or M).
The feature stage's node files (written by extraction.py and synthetic_nodes.py, read by
generate_graph.py): `<features>/features_<split>/SessSS.pkl`.
"""

from __future__ import annotations

from pathlib import Path

from encoder.core import util

ANNOTATION_DIR = "annotation"
WAV_DIR = "wav"


def session_name(session: int) -> str:
    """`Sess01`: the prefix of a session's file names and segment IDs."""
    return f"Sess{session:02d}"


def session_dir(root: Path, folder: str, session: int) -> Path:
    """root/<folder>/SessionSS: a session's folder under wav/, EDA/ or TEMP/."""
    return Path(root) / folder / f"Session{session:02d}"


def segment_id(session: int, script: int, participant: str, index: int) -> str:
    """`Sess01_script02_User001F_003`: the participant's `index`-th utterance in script `script`."""
    return f"{session_name(session)}_script{script:02d}_{participant}_{index:03d}"


def annotation_path(root: Path, session: int) -> Path:
    return Path(root) / ANNOTATION_DIR / f"{session_name(session)}_eval.csv"


def bio_path(root: Path, modality: str, session: int, script: int, participant: str) -> Path:
    """A participant's EDA or TEMP recording of one script."""
    return session_dir(root, modality, session) / f"{session_name(session)}_script{script:02d}_{participant}.csv"


def wav_path(root: Path, segment_id: str) -> Path:
    """root/wav/SessionSS/<segment_id>.wav (the session read from the ID's `SessSS_` prefix)."""
    return session_dir(root, WAV_DIR, util.parse_segment_id(segment_id)["session"]) / f"{segment_id}.wav"


def transcript_path(root: Path, segment_id: str) -> Path:
    """root/wav/SessionSS/<segment_id>.txt."""
    return wav_path(root, segment_id).with_suffix(".txt")


def node_dir(features_dir: Path, split: str) -> Path:
    """Where the node files of one split are: <features>/features_<split>."""
    return Path(features_dir) / f"features_{split}"


def node_file(features_dir: Path, split: str, session: int) -> Path:
    """One session's node rows: <features>/features_<split>/SessSS.pkl."""
    return node_dir(features_dir, split) / f"{session_name(session)}.pkl"
