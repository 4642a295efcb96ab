"""On-disk names shared by the modules that write a file and the modules that read it.

The KEMDy20 tree (read by kemdy20.py, written by the synthetic generator):

    annotation/SessSS_eval.csv
    wav/SessionSS/<segment ID>.wav and .txt (the transcript)
    EDA/SessionSS/SessSS_scriptNN_<participant>.csv, TEMP/... the same

with segment IDs `SessSS_scriptNN_<participant>_III` and participants `UserNNNG` (G: F or M).
The feature stage's node files (written by extraction.py and synthetic_nodes.py, read by
generate_graph.py): `<features>/features_<split>/SessSS.pkl`.

The results trees (written by run_pipeline.py, read by cv_results.py):

    <work>/pipeline_state.json, results/<exp>/            the single run
    <work>/results/seed_S/                                 a later seed's whole chain (single run)
    <work>/results/<data>[_<stacking>]_cvK[_<name>]/       a CV run: settings.json, summaries
        fold_k/ (splits.json, pipeline_state.json, encoder/, features/, graphs/, gnn_<modalities>/)
        seed_S/fold_k/                                     a later seed's whole chain

`<name>` is the experiment's name (run_pipeline.py --name; by default the input options set apart from
config.py, e.g. `pnorm`), and settings.json holds what it was run with.
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


STATE_FILE = "pipeline_state.json"
LOCK_FILE = ".run_pipeline.lock"  # in the work folder: one run_pipeline.py at a time (util.exclusive_lock)
SPLITS_FILE = "splits.json"
SETTINGS_FILE = "settings.json"


def modality_tag(modalities: str) -> str:
    """`audio,eda` -> `audio-eda`: the modality set in folder and file names."""
    return modalities.replace(",", "-")


def experiment_suffix(name: str) -> str:
    """`_<name>` for a named experiment, empty for the default one."""
    return f"_{name}" if name else ""


def cv_dir(results: Path, data_name: str, k: int, name: str = "", stacking: str = "") -> Path:
    """results/<data>[_<stacking>]_cvK[_<name>]: one CV run, every seed and modality set."""
    return Path(results) / f"{data_name}{experiment_suffix(stacking)}_cv{k}{experiment_suffix(name)}"


def single_experiment(data_name: str, modalities: str, name: str = "", stacking: str = "") -> str:
    """<data>_<modalities>[_<stacking>][_<name>]: the single run's results folder under results/."""
    return f"{data_name}_{modality_tag(modalities)}{experiment_suffix(stacking)}{experiment_suffix(name)}"


def seed_tree(tree: Path, seed: int, first: int) -> Path:
    """Where seed `seed`'s whole chain goes: the tree itself for the first seed, else tree/seed_S."""
    return Path(tree) if seed == first else Path(tree) / f"seed_{seed}"


def seed_trees(cv_dir: Path) -> dict[str, Path]:
    """The trees of a CV run by seed: "first" (the folder itself: the first seed's folds) and "seed_S"
    (its subfolder of seed S's whole chain), in seed order."""
    cv_dir = Path(cv_dir)
    numbers = sorted(int(p.name[5:]) for p in cv_dir.glob("seed_*") if p.is_dir() and p.name[5:].isdigit())
    return {"first": cv_dir, **{f"seed_{s}": cv_dir / f"seed_{s}" for s in numbers}}


def seed_suffix(seed: int, first: int, keep_encoder: bool) -> str:
    """`_seedS` for seed S's GNN folder on the first seed's encoder (--keep_encoder), else empty."""
    return f"_seed{seed}" if seed != first and keep_encoder else ""


def seed_runs(cv_dir: Path, modalities: str) -> dict[str, tuple[Path, str]]:
    """Every seed of a CV run as (tree, GNN folder name): the seed trees of a run that retrained the whole chain for
    each seed (seed_trees), or the first tree with each seed's GNN folder (`gnn_<modalities>_seedS`, seed_suffix) for
    a run whose seeds kept the first seed's encoder (--keep_encoder)."""
    gnn = gnn_folder(modalities)
    trees = seed_trees(cv_dir)
    if len(trees) > 1:
        return {name: (tree, gnn) for name, tree in trees.items()}
    stem = gnn + "_seed"
    kept = sorted(int(p.name[len(stem):]) for p in fold_dir(cv_dir, 0).glob(stem + "*")
                  if p.is_dir() and p.name[len(stem):].isdigit())
    return {"first": (Path(cv_dir), gnn),
            **{f"seed_{s}": (Path(cv_dir), f"{stem}{s}") for s in kept}}


def fold_dir(tree: Path, k: int) -> Path:
    return Path(tree) / f"fold_{k}"


def fold_dirs(tree: Path) -> list[Path]:
    """The fold folders of a CV tree: fold_0, fold_1, ..., fold_{K-1}."""
    tree = Path(tree)
    numbers = sorted(int(p.name[5:]) for p in tree.glob("fold_*") if p.is_dir() and p.name[5:].isdigit())
    if not numbers:
        raise util.DataError("no fold_k folders: not a run_pipeline.py --cv folder", tree)
    if numbers != list(range(len(numbers))):
        raise util.DataError(f"fold folders {numbers} are not 0 ... {len(numbers) - 1}: a fold is missing", tree)
    return [fold_dir(tree, k) for k in numbers]


def gnn_folder(modalities: str, suffix: str = "") -> str:
    """A fold's GNN folder (train_val's --exp) for one modality set; `suffix`: graph variant and seed
    (`_ciy`, `_seedS`)."""
    return f"gnn_{modality_tag(modalities)}{suffix}"


def summary_files(cv_dir: Path, modalities: str, suffix: str = "") -> dict[str, Path]:
    """The summary JSON and its two figures for one modality set (and GNN folder suffix)."""
    tag = modality_tag(modalities) + suffix
    return {"json": Path(cv_dir) / f"summary_{tag}.json", "folds": Path(cv_dir) / f"summary_{tag}.png",
            "confusion": Path(cv_dir) / f"confusion_pooled_{tag}.png"}


def seeds_summary_path(folder: Path, tag: str, keep_encoder: bool) -> Path:
    """seeds_<tag>[_keep_encoder].json: a --seeds run's summary (tag: the CV run's modalities and graph
    variant, or the single run's experiment)."""
    return Path(folder) / f"seeds_{tag}{'_keep_encoder' if keep_encoder else ''}.json"
