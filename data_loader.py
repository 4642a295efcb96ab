"""Temporal graphs on disk: folder naming, the build record and a PyTorch Geometric `Dataset`.

A graph folder `graphs/<feature>_<numv>_<time_edge>_<cross_identity>_<edge_weight>/` holds
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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch_geometric.data import Data, Dataset

from encoder.core import util
from encoder.core.checkpoints import read_torch_file, save_torch_file

BUILD_FILE = "graph_build.json"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val", "test")


def graph_dir_name(feature: str, numv: int, time_edge: float, cross_identity: str, edge_weight: str) -> str:
    """Folder name of a graph configuration, e.g. `features_2000_7.2_cin_fsimy`."""
    return f"{feature}_{numv}_{time_edge:g}_{cross_identity}_{edge_weight}"


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
