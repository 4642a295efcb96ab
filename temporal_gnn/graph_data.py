"""Temporal graphs on disk: folder naming, the build record and a PyTorch Geometric `Dataset`.

A graph folder `graphs/<feature>_<numv>_<time_edge>_<cross_identity>/` holds
`graph_build.json` (the feature manifest it came from, by sha256, and the build configuration) and
`{train,val,test}/processed/SessSS_GGG.pt`, one file per graph. Each file is a plain dict of tensors
and lists (loadable with `torch.load(weights_only=True)`) that becomes a `torch_geometric.data.Data`:

    x            float32 [n, D]   node features (modalities in the manifest's feature_order)
    y            float32 [n, 7]   listed labels as a normalised multi-hot (training target)
    target       int64   [n]      first listed label (metric target)
    edge_index   int64   [2, E]   edge j -> k as column (j, k)
    edge_attr    float32 [E]      sign(t_j - t_k)
    time_s       float64 [n]      seconds of day
    session      int64   [n]
    segment_id   list[str]        per node; after batching a list of per-graph lists
    identity     list[str]        per node; after batching a list of per-graph lists

`speaker_windows` turns graphs back into node sequences for the temporal baseline without a graph
(temporal_model.py): the same nodes and attributes, no edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data, Dataset

from encoder.core import util
from encoder.core.checkpoints import read_torch_file, save_torch_file

BUILD_FILE = "graph_build.json"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val", "test")


def graph_dir_name(feature: str, numv: int, time_edge: float, cross_identity: str) -> str:
    """Folder name of a graph configuration, e.g. `features_2000_7.2_cin`."""
    return f"{feature}_{numv}_{time_edge:g}_{cross_identity}"


def save_graph(data: Data, path: Path) -> None:
    """Write one graph as a plain dict (safe to load with weights_only=True), atomically."""
    save_torch_file(data.to_dict(), path)


def load_graph(path: Path) -> Data:
    stored = read_torch_file(path, "a graph file written by generate_graph.py")
    if "x" not in stored or "edge_index" not in stored:
        raise util.DataError("not a graph file written by generate_graph.py (no x or edge_index)", path)
    return Data(**stored)


class GraphDataset(Dataset):
    """The graphs of one split, `<graph_dir>/<split>/processed/*.pt`, in file-name order.

    Read-only: graphs are built by generate_graph.py (this class defines no `process`)."""

    def __init__(self, root: Path | str, transform: Any = None):
        root = Path(root)
        processed = root / "processed"
        if not processed.is_dir():
            raise util.DataError("graph folder not found; run generate_graph.py first", processed)
        self._files = sorted(processed.glob("*.pt"))
        if not self._files:
            raise util.DataError("no graph files (*.pt); run generate_graph.py", processed)
        super().__init__(str(root), transform=transform, log=False)

    @property
    def raw_file_names(self) -> list[str]:
        return []

    @property
    def processed_file_names(self) -> list[str]:
        return [f.name for f in self._files]

    def len(self) -> int:
        return len(self._files)

    def get(self, idx: int) -> Data:
        return load_graph(self._files[idx])


def read_build_record(graph_dir: Path) -> dict[str, Any]:
    """The build record of a graph folder; DataError naming the folder when it is missing."""
    graph_dir = Path(graph_dir)
    if not graph_dir.is_dir():
        raise util.DataError("graph folder not found; run generate_graph.py with the same settings", graph_dir)
    record_path = graph_dir / BUILD_FILE
    if not record_path.is_file():
        raise util.DataError(f"no {BUILD_FILE}: not a complete graph folder; rerun generate_graph.py --force",
                             graph_dir)
    return util.read_json(record_path)


def check_manifest(graph_dir: Path, features_dir: Path, record: dict[str, Any]) -> None:
    """Refuse graphs built from another feature manifest than the one in `features_dir`, and graphs
    whose feature manifest is missing (nothing would vouch for them)."""
    manifest_path = Path(features_dir) / MANIFEST_FILE
    if not manifest_path.is_file():
        raise util.DataError("feature manifest missing: the graphs cannot be checked against their features; "
                             "rerun STE_forward.py and generate_graph.py", manifest_path)
    sha = util.file_sha256(manifest_path)
    if record.get("feature_manifest_sha256") != sha:
        raise util.DataError(
            f"graphs were built from another feature manifest than {manifest_path}; "
            "rerun generate_graph.py --force", Path(graph_dir) / BUILD_FILE)
    return None


def load_split(graph_dir: Path, split: str) -> list[Data]:
    """All graphs of a split, in memory (a few hundred graphs for KEMDy20)."""
    dataset = GraphDataset(Path(graph_dir) / split)
    return [dataset[i] for i in range(len(dataset))]


def flatten(per_graph: Sequence[Sequence[Any]] | Sequence[Any]) -> list[Any]:
    """Per-node list attribute of a batch (a list of per-graph lists) as one flat list in node order."""
    if per_graph and isinstance(per_graph[0], list | tuple):
        return [item for graph in per_graph for item in graph]
    return list(per_graph)


NODE_TENSORS = ("x", "y", "target", "time_s", "session")  # per-node tensors a window keeps
NODE_LISTS = ("segment_id", "identity")


def speaker_windows(graphs: Sequence[Data], span_s: float) -> list[Data]:
    """The nodes of `graphs` as one time-sorted sequence per (session, identity), cut into windows: a
    window starts at a node and holds that speaker's nodes less than `span_s` seconds after it (the
    next window starts at the first node beyond). Windows come in session, identity and time order,
    as Data objects with the graphs' node attributes and no edges; ties in time keep the graphs' order."""
    if span_s <= 0:
        raise ValueError(f"window span must be positive, got {span_s}")
    nodes = {k: torch.cat([g[k] for g in graphs]) for k in NODE_TENSORS}
    lists = {k: np.array(flatten([g[k] for g in graphs]), dtype=str) for k in NODE_LISTS}
    session, time_s, identity = nodes["session"].numpy(), nodes["time_s"].numpy(), lists["identity"]
    order = np.lexsort((time_s, identity, session))  # stable: ties keep the graphs' order
    speaker = np.r_[True, (session[order][1:] != session[order][:-1]) | (identity[order][1:] != identity[order][:-1])]
    bounds = [*np.flatnonzero(speaker), len(order)]
    windows: list[Data] = []
    for first, last in zip(bounds[:-1], bounds[1:], strict=True):
        times = time_s[order[first:last]]
        start = 0
        while start < len(times):
            end = int(np.searchsorted(times, times[start] + span_s, side="left"))
            idx = order[first + start:first + end]
            windows.append(Data(**{k: v[torch.from_numpy(idx)] for k, v in nodes.items()},
                                **{k: v[idx].tolist() for k, v in lists.items()}))
            start = end
    return windows


def windows_per_batch(graphs: Sequence[Data], windows: Sequence[Data], graphs_per_batch: int) -> int:
    """How many windows hold about as many nodes as `graphs_per_batch` graphs (at least one), so that
    the temporal baseline takes about as many optimiser steps per epoch as the GNN."""
    nodes_per_graph = sum(g.num_nodes for g in graphs) / max(len(graphs), 1)
    nodes_per_window = sum(w.num_nodes for w in windows) / max(len(windows), 1)
    return max(1, round(graphs_per_batch * nodes_per_graph / nodes_per_window))
