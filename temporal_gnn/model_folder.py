"""One model folder: everything predict.py needs, written by train_val.py as results/<exp>/model/.

    model/model.json   the one record of how the GNN was trained and must be fed: the two checkpoints
                       (file names and sha256; the encoder's is the one whose features trained the GNN),
                       `graph` = the graph folder's graph_build.json `build` object verbatim (numv,
                       time_edge, cross_identity, ...), `settings` = the GraphSettings and GnnSettings
                       the GNN was trained with (train_val.py; their to_dict()), class order, the precision the
                       training features were computed in, the feature blocks, and, copied from the
                       encoder checkpoint for reading, its clip length, spectrogram settings, input
                       options (encoder/core/participant.py) and training-session normalisation;
                       `participant_statistics` is the feature manifest's ("prefix", "session" or None).
                       Whether the GNN is causal is its checkpoint's model configuration (the model
                       is rebuilt from it).
    model/gnn.pth      the GNN checkpoint (a hard link of results/<exp>/best.pth)
    model/encoder.pth  the encoder checkpoint the features came from (the feature manifest's
                       `encoder_checkpoint`), hard-linked (a copy across file systems) and verified
                       against the manifest's `encoder_sha256`
    model/text_block.npz  when the features carry a text block (encoder/core/text.py): the fitted
                       TF-IDF + SVD beside the feature manifest, hard-linked and verified against the
                       manifest's `text.sha256`; model.json's `text` is the manifest's record of how it
                       was made plus its file name. It is there whether or not the GNN reads the block
                       (its checkpoint's `modalities` say that); prediction vectorises transcripts with
                       it only for a GNN that reads it.
    model.json's `pretrained`  when the features carry pretrained blocks (encoder/core/pretrained.py: `lm`,
                       `ssl`): the feature manifest's record of each, with the model folder's path and
                       sha256 (pretrained.folder_sha256). The folders themselves are not copied (hundreds
                       of MB); predict.py looks for each at its recorded path (or the --text_model /
                       --speech_model it is given) and refuses a folder with another sha256.

When that encoder file is gone or was overwritten since the features were extracted (its sha256
differs), model.json still names it by path and sha256 and `load` looks for it there; prediction
refuses any file with another hash. `python predict.py --model results/<exp>` (or the model/ folder
itself, wherever it was copied) is then the whole command; `load_pair` serves the two-checkpoint form
(`--encoder FILE --gnn results/<exp>/best.pth`) from the same record. Folders written before this
format (kemdy20-model/1, or a GNN checkpoint without a model folder) are refused: retrain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from encoder.core import checkpoints, config, pretrained, text, util

FORMAT = "kemdy20-model/2"
GRAPH_KEYS = ("numv", "time_edge", "cross_identity")
FOLDER = "model"
MANIFEST = "model.json"
GNN_FILE = "gnn.pth"
ENCODER_FILE = "encoder.pth"
# What train_val.py writes beside model/ in results/<exp>/, named once here for the modules that read
# it without importing train_val (and torch_geometric): cv_results.py, run_pipeline.py.
GNN_METRICS_FILE = "metrics.json"
GNN_PREDICTIONS_FILE = "predictions_test.csv"


def feature_manifest(record: dict[str, Any], features_dir: Path) -> Path | None:
    """The feature manifest the graphs of build record `record` came from: features_dir's, else the
    path the record names, when its sha256 is the recorded one; None when there is none."""
    for path in (Path(features_dir) / "manifest.json", Path(record.get("feature_manifest") or "")):
        if path.is_file() and util.file_sha256(path) == record.get("feature_manifest_sha256"):
            return path
    return None


def write(results: Path, gnn_checkpoint: Path, record: dict[str, Any], manifest_path: Path | None,
          systems: dict[str, dict[str, Any]] | None = None, settings: dict[str, Any] | None = None) -> list[str]:
    """Write results/<exp>/model/ (`results` is the folder being written, e.g. train_val's temporary one)
    for the GNN checkpoint `gnn_checkpoint` trained on graphs with build record `record`, whose features
    are described by the feature manifest `manifest_path`. `systems`: the baseline systems that saved
    themselves into the folder (name -> their record: `file`, `sha256`, ...; systems.py), model.json's
    `systems`; `settings`: how the GNN was trained ({"graph": ..., "gnn": ...}), model.json's `settings`.
    Returns notes for what it could not include."""
    folder = Path(results) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    util.link_file(gnn_checkpoint, folder / GNN_FILE)
    manifest = util.read_json(manifest_path) if manifest_path is not None and manifest_path.is_file() else {}
    encoder: dict[str, Any] = {"file": None, "sha256": record.get("encoder_sha256"),
                               "source": manifest.get("encoder_checkpoint")}
    state: dict[str, Any] = {}
    source = Path(encoder["source"]) if encoder["source"] else None
    if encoder["sha256"] is None:
        notes.append(f"{FOLDER}/: the graph record names no encoder sha256; predict.py will refuse this GNN")
    elif source is None:
        notes.append(f"{FOLDER}/: no feature manifest naming the encoder checkpoint; predict.py needs "
                     f"--encoder (sha256 {encoder['sha256'][:12]}...) and --gnn")
    elif not source.is_file() or util.file_sha256(source) != encoder["sha256"]:
        notes.append(f"{FOLDER}/: encoder checkpoint {source} is missing or changed since the features were "
                     f"extracted; model.json names it by sha256 {encoder['sha256'][:12]}... only")
    else:
        util.link_file(source, folder / ENCODER_FILE)
        if util.file_sha256(folder / ENCODER_FILE) != encoder["sha256"]:
            raise util.DataError("changed while being copied into the model folder", source)
        encoder["file"] = ENCODER_FILE
        state = checkpoints.load_encoder_checkpoint(folder / ENCODER_FILE)
    util.write_json({
        "format": FORMAT,
        "gnn": {"file": GNN_FILE, "sha256": util.file_sha256(folder / GNN_FILE)},
        "encoder": encoder,
        "graph": record["build"],
        "settings": dict(settings or {}),
        "classes": list(config.EMOTIONS),
        "feature_precision": manifest.get("feature_precision"),
        "feature_order": record.get("feature_order"),
        "feature_dims": record.get("feature_dims"),
        "feature_manifest_sha256": record.get("feature_manifest_sha256"),
        "clip_length": (state.get("inputs") or {}).get("clip_length", manifest.get("clip_length")),
        "spectrogram": manifest.get("spectrogram"),
        "input_options": manifest.get("input_options"),
        "participant_statistics": manifest.get("participant_statistics"),
        "normalization": state.get("normalization"),
        "text": _text_block(folder, manifest_path, manifest, record),
        "pretrained": _pretrained(manifest_path, manifest, record),
        "systems": dict(systems or {}),
    }, folder / MANIFEST)
    return notes


def _text_block(folder: Path, manifest_path: Path | None, manifest: dict[str, Any],
                record: dict[str, Any]) -> dict[str, Any] | None:
    """Link the features' text block into the model folder; its record for model.json (None: no block)."""
    if text.NAME not in (record.get("feature_dims") or {}):
        return None
    stored = manifest.get("text") or {}
    source = Path(manifest_path).parent / text.FILE if manifest_path is not None else None
    if source is None or not source.is_file() or util.file_sha256(source) != stored.get("sha256"):
        raise util.DataError("the features carry a text block but its file is missing or differs from the feature "
                             "manifest's record (sha256); rerun STE_forward.py", source or Path(text.FILE))
    util.link_file(source, folder / text.FILE)
    return {**stored, "file": text.FILE}


def _pretrained(manifest_path: Path | None, manifest: dict[str, Any], record: dict[str, Any]
                ) -> dict[str, dict[str, Any]]:
    """The feature manifest's record of each pretrained block the features carry (folder path and sha256)."""
    stored = manifest.get("pretrained") or {}
    records = {}
    for name in pretrained.NAMES:
        if name in (record.get("feature_dims") or {}):
            if not (stored.get(name) or {}).get("sha256"):
                raise util.DataError(f"the features carry a `{name}` block but the feature manifest has no "
                                     "record of its model folder; rerun STE_forward.py",
                                     manifest_path or Path("manifest.json"))
            records[name] = stored[name]
    return records


def _near(folder: Path) -> Path | None:
    """model.json in `folder` (a model folder) or in its model/ (a results/<exp> folder); None if neither."""
    return next((p for p in (folder / MANIFEST, folder / FOLDER / MANIFEST) if p.is_file()), None)


def find(path: Path) -> Path:
    """model.json of `path`: a model folder, or a results/<exp> folder holding one."""
    path = Path(path)
    if (found := _near(path)) is not None:
        return found
    if not path.is_dir():
        raise util.DataError("model folder not found", path)
    raise util.DataError(f"no {MANIFEST} here nor in {FOLDER}/ (train_val.py writes results/<exp>/{FOLDER}/); "
                         "or give --encoder and --gnn", path)


def read(manifest_path: Path) -> dict[str, Any]:
    """model.json of this format with its class order and graph settings checked; anything else is a
    one-line DataError naming the file."""
    model = util.read_json(manifest_path)
    if model.get("format") != FORMAT:
        raise util.DataError(f"model folder of format {model.get('format')!r}, this code reads {FORMAT!r}: "
                             "retrain with train_val.py", manifest_path)
    if list(model.get("classes") or []) != list(config.EMOTIONS):
        raise util.DataError(f"model trained with classes {model.get('classes')}, this code has "
                             f"{list(config.EMOTIONS)}", manifest_path)
    graph = model.get("graph")
    if not isinstance(graph, dict) or any(graph.get(k) is None for k in GRAPH_KEYS):
        raise util.DataError(f"no graph settings ({', '.join(GRAPH_KEYS)}) in `graph`", manifest_path)
    return model


def load(path: Path) -> dict[str, Any]:
    """Read a model folder: model.json with `encoder_path` and `gnn_path` resolved and both files checked
    against their sha256; a missing or altered file, or another class order, is a DataError naming it."""
    manifest_path = find(path)
    model = read(manifest_path)
    folder = manifest_path.parent
    gnn = folder / model["gnn"]["file"]
    _verify(gnn, model["gnn"]["sha256"], "GNN checkpoint")
    _check_text(model, folder, manifest_path)
    _check_systems(model, folder)
    encoder = model["encoder"]
    candidates = [folder / encoder["file"]] if encoder.get("file") else []
    candidates += [Path(encoder["source"])] if encoder.get("source") else []
    found = [p for p in candidates if p.is_file() and encoder.get("sha256")
             and util.file_sha256(p) == encoder["sha256"]]
    if not found:
        looked = ", ".join(map(str, candidates)) or "nowhere (none recorded)"
        raise util.DataError(f"no encoder checkpoint with sha256 {encoder.get('sha256')} (looked at {looked}); "
                             "give --encoder and --gnn instead", manifest_path)
    return {**model, "manifest_path": manifest_path, "gnn_path": gnn, "encoder_path": found[0]}


def load_pair(encoder_path: Path, gnn_path: Path) -> dict[str, Any]:
    """The record of GNN checkpoint `gnn_path` (results/<exp>/best.pth, or gnn.pth of a model folder), with
    `encoder_path` in place of the recorded encoder: the model.json beside it must record this very GNN
    file (sha256) and the encoder its features came from, and that encoder must be `encoder_path` (sha256).
    A GNN whose features' encoder is unknown cannot be checked and is refused too."""
    gnn_path, encoder_path = Path(gnn_path), Path(encoder_path)
    if not gnn_path.is_file():
        raise util.DataError("GNN checkpoint not found", gnn_path)
    manifest_path = _near(gnn_path.parent)
    if manifest_path is None:
        raise util.DataError(f"no {FOLDER}/{MANIFEST} beside this GNN checkpoint: no record of its graph settings nor "
                             "of the encoder its features came from, so --encoder cannot be checked; retrain with "
                             "train_val.py", gnn_path)
    model = read(manifest_path)
    if util.file_sha256(gnn_path) != model["gnn"]["sha256"]:
        raise util.DataError(f"{manifest_path} records another GNN checkpoint (sha256 {model['gnn']['sha256']})",
                             gnn_path)
    recorded = model["encoder"].get("sha256")
    if not recorded:
        raise util.DataError(f"{manifest_path} has no record of the encoder whose features trained this GNN, so "
                             f"--encoder {encoder_path} cannot be checked; retrain with train_val.py", gnn_path)
    if not encoder_path.is_file():
        raise util.DataError("encoder checkpoint not found", encoder_path)
    actual = util.file_sha256(encoder_path)
    if actual != recorded:
        raise util.DataError(f"encoder checkpoint sha256 {actual}, but the GNN {gnn_path} was trained on features "
                             f"of the encoder with sha256 {recorded}", encoder_path)
    _check_text(model, manifest_path.parent, manifest_path)
    _check_systems(model, manifest_path.parent)
    return {**model, "manifest_path": manifest_path, "gnn_path": gnn_path, "encoder_path": encoder_path}


def _check_text(model: dict[str, Any], folder: Path, manifest_path: Path) -> None:
    """Set model["text_path"] to the verified text block when the features carried one (else None)."""
    model["text_path"] = None
    if text.NAME not in (model.get("feature_dims") or {}):
        return
    record = model.get("text") or {}
    if not record.get("file"):
        raise util.DataError("the features carried a text block but model.json has no record of its file",
                             manifest_path)
    path = folder / record["file"]
    _verify(path, record.get("sha256"), "text block")
    model["text_path"] = path


def _check_systems(model: dict[str, Any], folder: Path) -> None:
    """Set model["system_paths"] (name -> verified file) for the baseline systems saved in the folder."""
    model["system_paths"] = {}
    for name, record in (model.get("systems") or {}).items():
        path = folder / record["file"]
        _verify(path, record.get("sha256"), f"{name} system")
        model["system_paths"][name] = path


def _verify(path: Path, sha256: str | None, what: str) -> None:
    if not path.is_file():
        raise util.DataError(f"{what} missing from the model folder", path)
    if sha256 is not None and util.file_sha256(path) != sha256:
        raise util.DataError(f"{what} differs from the one the model folder records (sha256)", path)
