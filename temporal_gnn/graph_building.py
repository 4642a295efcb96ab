"""Build forward/backward/undirected temporal graphs from the encoder stage's node files.

    python generate_graph.py [--feature features] [--numv 2000] [--time_edge 7.2]
                             [--cross_identity {cin,ciy}] [--workers 1] [--force]

A session's nodes are sorted by time (stable; ties by identity, then segment ID) and cut into graphs
of `numv` nodes. Inside a graph there is an edge j -> k when 0 < |t_j - t_k| <= time_edge and the two
nodes have the same identity (`cin`) or any identity (`ciy`), and an edge for every pair with
t_j == t_k whatever the identity, self-loops included. `edge_attr = sign(t_j - t_k)`; the model's
forward branch uses the edges with attr >= 0, the backward branch attr <= 0, the undirected all.
The original's `--edge_weight {fsimy,fsimn}` is still accepted, so that its commands run, and changes
nothing, not even the folder name (a note says so): in SPELL the flag decides whether each edge stores
its time sign, and the three-branch model here always needs that sign (it splits the branches by it), so
`edge_attr` always holds it. No layer of the model takes a per-edge weight (EdgeConv and SAGEConv have
none), so no similarity weight is computed or stored, and config.GRAPH has no such setting.

How the graphs are built is a `GraphSettings` (config.GRAPH, overridden by a profile or by the flags in
`run()` only; checked when built) and where they are read and written a `GraphFolders`;
`build_graphs(settings, folders)` is the importable entry point (run_pipeline.py's stages call it); `run(argv)`
is generate_graph.py.

Edges are computed with sorted-window tensor operations (no loop over node pairs), one graph at a
time. The output folder is written atomically and records the feature manifest (sha256) and the
build configuration; an up-to-date folder is skipped, one from another manifest is refused unless
--force. See graph_data.py for the layout of a graph file.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data
from tqdm import tqdm

from encoder.core import config, layout, util
from temporal_gnn import graph_data

FORMAT_VERSION = 1
CROSS_IDENTITY = ("cin", "ciy")


@dataclass(frozen=True)
class GraphSettings:
    """How a session's nodes become graphs (the module docstring's rule): config.GRAPH's entries, each
    overridden for one run by a profile (run_pipeline.py, config.DEMO) or a flag (`run()`). Built, it is
    checked: a bad value is a one-line ValueError naming the setting."""

    numv: int  # nodes per graph
    time_edge: float  # longest edge in seconds
    cross_identity: str  # cin: timed edges within one identity only; ciy: across identities too

    def __post_init__(self) -> None:
        check_setting("GRAPH", self, "numv", is_int(self.numv) and self.numv >= 1, "an integer >= 1")
        check_setting("GRAPH", self, "time_edge", is_number(self.time_edge) and self.time_edge >= 0,
                      "a number of seconds >= 0")
        object.__setattr__(self, "time_edge", float(self.time_edge))
        check_setting("GRAPH", self, "cross_identity", self.cross_identity in CROSS_IDENTITY,
                      f"one of {', '.join(CROSS_IDENTITY)}")

    @classmethod
    def from_config(cls, overrides: Mapping[str, Any] | None = None) -> GraphSettings:
        """config.GRAPH as it is now, with `overrides` (e.g. config.DEMO["GRAPH"]) over it."""
        return cls(**settings_values("GRAPH", cls, config.GRAPH, overrides))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GraphSettings:
        """The settings that add_graph_args' flags (defaults: config.GRAPH) name."""
        return cls.from_config({f.name: getattr(args, f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def folder_name(self, feature: str) -> str:
        """The graph folder's name for node files of feature set `feature` (graph_data.graph_dir_name)."""
        return graph_data.graph_dir_name(feature, self.numv, self.time_edge, self.cross_identity)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and bool(np.isfinite(value))


def check_setting(section: str, settings: Any, name: str, ok: bool, what: str) -> None:
    """A settings dataclass's check: unless `ok`, a one-line ValueError naming the section's setting."""
    if not ok:
        raise ValueError(f"{section} setting {name!r} must be {what}, not {getattr(settings, name)!r}")


def settings_values(section: str, cls: type, base: Mapping[str, Any],
                     overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """config section `base` with `overrides` over it, as keyword arguments of settings dataclass `cls`: an
    entry that is none of its fields, or a field without a default that neither names, is a ValueError."""
    values = {**base, **(overrides or {})}
    names = [f.name for f in fields(cls)]
    unknown = [name for name in values if name not in names]
    if unknown:
        raise ValueError(f"{section} has no setting {', '.join(map(repr, unknown))} (its settings: "
                         f"{', '.join(names)})")
    missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
    if missing:
        raise ValueError(f"config.{section} lacks {', '.join(map(repr, missing))}")
    return values


@dataclass(frozen=True)
class GraphFolders:
    """Where the graphs are built from and written to: the node files' folder (`features_dir`), the folder
    of graph folders (`graphs_dir`) and the feature set's name (the first part of a graph folder's name)."""

    features_dir: Path
    graphs_dir: Path
    feature: str = "features"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GraphFolders:
        """The folders add_graph_args' flags name (--features_dir, else <repo>/<--feature>)."""
        return cls(Path(args.features_dir or config.FEATURES_DIR.parent / args.feature),
                   Path(args.graphs_dir or config.GRAPHS_DIR), args.feature)

    def graph_dir(self, settings: GraphSettings) -> Path:
        """The graph folder of `settings`: <graphs_dir>/<feature>_<numv>_<time_edge>_<cross_identity>."""
        return self.graphs_dir / settings.folder_name(self.feature)

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "features_dir": str(self.features_dir), "graphs_dir": str(self.graphs_dir)}


def build_edges(times: torch.Tensor, identity: torch.Tensor, time_edge: float,
                cross_identity: str = "cin") -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of the module docstring's rule among nodes with `times` (float64 [n]) and integer `identity` codes.

    Returns (edge_index int64 [2, E], edge_attr float32 [E] = sign(t_j - t_k)). The rule is symmetric,
    so only pairs (j, k) with k at or after j in time order are tested: candidates come from the window
    [t_j, t_j + time_edge] found by binary search in the sorted times, the exact |t_j - t_k| <=
    time_edge test is applied afterwards (the result equals the pairwise rule bit for bit), and the
    mirror image of every kept pair j != k is appended. Edge order: the tested pairs by source, then
    their mirror images; compare edge sets, not orders."""
    if cross_identity not in ("cin", "ciy"):
        raise ValueError(f"cross_identity must be cin or ciy, not {cross_identity!r}")
    times = torch.as_tensor(times, dtype=torch.float64)
    identity = torch.as_tensor(identity)
    if bool((times[1:] >= times[:-1]).all()):
        return _sorted_edges(times, identity, time_edge, cross_identity)
    order = torch.argsort(times, stable=True)
    edge_index, edge_attr = _sorted_edges(times[order], identity[order], time_edge, cross_identity)
    return order[edge_index], edge_attr


def _sorted_edges(times: torch.Tensor, identity: torch.Tensor, time_edge: float,
                  cross_identity: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = times.numel()
    if n == 0:
        return torch.zeros((2, 0), dtype=torch.long), torch.zeros(0)
    # the window is widened by a margin for float rounding of t + time_edge; the exact test follows
    reach = max(float(time_edge), 0.0) + 1e-6 + 1e-9 * float(times.abs().max())
    nodes = torch.arange(n)
    counts = torch.searchsorted(times, times + reach, side="right") - nodes
    src = torch.repeat_interleave(nodes, counts)
    dst = torch.arange(src.numel()) + torch.repeat_interleave(nodes - (torch.cumsum(counts, 0) - counts), counts)
    # index_select is several times faster than tensor[index] for large index tensors
    delta = times.index_select(0, src) - times.index_select(0, dst)
    keep = delta >= -time_edge
    if cross_identity == "cin":
        keep &= identity.index_select(0, src) == identity.index_select(0, dst)
    keep = torch.nonzero(keep | (delta == 0)).squeeze(1)
    src, dst, sign = (v.index_select(0, keep) for v in (src, dst, torch.sign(delta)))
    pair = torch.nonzero(src != dst).squeeze(1)
    mirror = torch.stack([dst.index_select(0, pair), src.index_select(0, pair)])
    edge_index = torch.cat([torch.stack([src, dst]), mirror], dim=1)
    return edge_index, torch.cat([sign, -sign.index_select(0, pair)]).to(torch.float32)


def read_nodes(path: Path, feature_dim: int) -> dict[str, Any]:
    """Load and check one node file; columns as arrays. DataError with file and row on bad rows."""
    try:
        with open(path, "rb") as fh:
            rows = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise util.DataError(f"unreadable node file ({err})", path) from None
    if not isinstance(rows, list) or not rows:
        raise util.DataError("node file holds no node rows", path)
    width = len(util.NODE_COLUMNS)
    for i, row in enumerate(rows):
        if not isinstance(row, tuple | list) or len(row) != width:
            raise util.DataError(f"node row is not a {width}-field tuple {util.NODE_COLUMNS}", path, i)
        if np.shape(row[3]) != (config.NUM_CLASSES,) or np.shape(row[6]) != (feature_dim,):
            raise util.DataError(f"label or feature of the wrong size (feature {np.shape(row[6])}, "
                                 f"manifest says {feature_dim})", path, i)
        if not _is_finite_number(row[1]):
            raise util.DataError(f"time_s is not a number: {row[1]!r}", path, i)
        if not isinstance(row[4], int | np.integer) or not 0 <= row[4] < config.NUM_CLASSES:
            raise util.DataError(f"target is not a class index 0-{config.NUM_CLASSES - 1}: {row[4]!r}", path, i)
    nodes = {
        "session": np.array([r[0] for r in rows], dtype=np.int64),
        "time_s": np.array([r[1] for r in rows], dtype=np.float64),
        "identity": np.array([r[2] for r in rows], dtype=str),
        "label": np.stack([r[3] for r in rows]).astype(np.float32),
        "target": np.array([r[4] for r in rows], dtype=np.int64),
        "segment_id": np.array([r[5] for r in rows], dtype=str),
        "feature": np.stack([r[6] for r in rows]).astype(np.float32),
    }
    finite = np.isfinite(nodes["feature"]).all(axis=1) & np.isfinite(nodes["label"]).all(axis=1)
    if not finite.all():
        raise util.DataError("NaN or infinite value in label or feature", path, int(np.argmin(finite)))
    if path.stem.startswith("Sess") and path.stem[4:].isdigit():
        wrong = nodes["session"] != int(path.stem[4:])
        if wrong.any():
            raise util.DataError(f"session {nodes['session'][wrong][0]} in the file of {path.stem}", path,
                                 int(np.argmax(wrong)))
    return nodes


def _is_finite_number(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def session_order(nodes: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Node order of a session (time, then identity, then segment ID; stable) and integer identity
    codes (same code = same identity)."""
    order = np.lexsort((nodes["segment_id"], nodes["identity"], nodes["time_s"]))
    return order, np.unique(nodes["identity"], return_inverse=True)[1]


def session_graphs(nodes: dict[str, Any], numv: int, time_edge: float, cross_identity: str) -> Iterator[Data]:
    """The graphs of one session: nodes sorted by (time, identity, segment ID), cut every `numv`."""
    order, codes = session_order(nodes)
    for start in range(0, len(order), numv):
        idx = order[start:start + numv]
        times = torch.from_numpy(nodes["time_s"][idx])
        x = torch.from_numpy(nodes["feature"][idx])
        edge_index, edge_attr = build_edges(times, torch.from_numpy(codes[idx]), time_edge, cross_identity)
        yield Data(
            x=x, y=torch.from_numpy(nodes["label"][idx]), target=torch.from_numpy(nodes["target"][idx]),
            edge_index=edge_index, edge_attr=edge_attr, time_s=times,
            session=torch.from_numpy(nodes["session"][idx]),
            segment_id=nodes["segment_id"][idx].tolist(), identity=nodes["identity"][idx].tolist(),
        )


def whole_sessions(graphs: Sequence[Data], time_edge: float, cross_identity: str) -> list[Data]:
    """One graph per session from its `numv`-node graphs: their nodes joined in order and the edges
    rebuilt over the whole session, i.e. `session_graphs` with numv at least the session's node count.
    This is the graph a causal model labels online (online.py), with no cut at every numv nodes."""
    by_session: dict[int, list[Data]] = {}
    for graph in graphs:
        sessions = graph.session.unique()
        if len(sessions) != 1:
            raise ValueError(f"a graph spans sessions {sessions.tolist()}")
        by_session.setdefault(int(sessions[0]), []).append(graph)
    joined = []
    for parts in by_session.values():
        nodes = {
            "session": torch.cat([g.session for g in parts]).numpy(),
            "time_s": torch.cat([g.time_s for g in parts]).numpy(),
            "identity": np.array([i for g in parts for i in g.identity], dtype=str),
            "label": torch.cat([g.y for g in parts]).numpy(),
            "target": torch.cat([g.target for g in parts]).numpy(),
            "segment_id": np.array([s for g in parts for s in g.segment_id], dtype=str),
            "feature": torch.cat([g.x for g in parts]).numpy(),
        }
        joined += session_graphs(nodes, len(nodes["time_s"]), time_edge, cross_identity)
    return joined


def build_session(node_file: Path, expected_nodes: int, out_dir: Path, feature_dim: int, numv: int,
                  time_edge: float, cross_identity: str) -> dict[str, Any]:
    """Build and write the graphs of one node file, which must hold the `expected_nodes` rows its
    feature manifest counted; returns counts for the build record. Runs torch on one thread (with
    --workers, one session per process) and gives the caller its thread count back: a later stage in the
    same process (run_pipeline's GNN training) must not depend on whether this stage ran."""
    with util.torch_threads(1):
        nodes = read_nodes(node_file, feature_dim)
        if len(nodes["time_s"]) != expected_nodes:
            raise util.DataError(f"{len(nodes['time_s'])} node rows, the feature manifest counted {expected_nodes}; "
                                 "rerun STE_forward.py", node_file)
        graphs = edges = 0
        for g, data in enumerate(session_graphs(nodes, numv, time_edge, cross_identity)):
            graph_data.save_graph(data, out_dir / f"{node_file.stem}_{g:03d}.pt")
            graphs, edges = graphs + 1, edges + data.num_edges
    return {"file": node_file.name, "nodes": len(nodes["time_s"]), "graphs": graphs, "edges": edges}


def build_graphs(settings: GraphSettings, folders: GraphFolders, workers: int = 1, force: bool = False) -> Path:
    """Build (or skip, when up to date) the graph folder of `settings` in `folders`; returns its path.
    `workers`: sessions built in parallel; `force`: rebuild even if the folder exists."""
    features_dir, out = folders.features_dir, folders.graph_dir(settings)
    manifest_path = features_dir / graph_data.MANIFEST_FILE
    manifest = util.read_json(manifest_path)
    missing = [k for k in ("feature_order", "feature_dims", "feature_dim", "splits", "node_counts")
               if k not in manifest]
    if missing:
        raise util.DataError(f"manifest lacks {', '.join(missing)}", manifest_path)
    sha = util.file_sha256(manifest_path)
    build = {"format": FORMAT_VERSION, "feature": folders.feature, **settings.to_dict()}
    if out.exists() and not force:
        record = graph_data.read_build_record(out)
        if record.get("feature_manifest_sha256") == sha and record.get("build") == build:
            print(f"graphs up to date, skipped: {out}")
            return out
        raise util.DataError(f"graphs from another feature manifest or configuration than {manifest_path}; "
                             "use --force to rebuild", out / graph_data.BUILD_FILE)
    jobs = []
    for split, sessions in manifest["splits"].items():
        split_dir = layout.node_dir(features_dir, split)
        files = sorted(split_dir.glob("Sess*.pkl"))
        if not files:
            raise util.DataError("no node files (SessSS.pkl)", split_dir)
        stray = [f.name for f in files if f.stem[4:].isdigit() and int(f.stem[4:]) not in sessions]
        if stray:
            raise util.DataError(f"{', '.join(stray)} not in the manifest's {split} sessions {sessions}", split_dir)
        counts = manifest["node_counts"].get(split, {})
        absent = [f"{name}.pkl" for name in counts if not (split_dir / f"{name}.pkl").is_file()]
        if absent or len(counts) != len(files):
            raise util.DataError(f"node files {', '.join(absent) or [f.name for f in files]} do not match the "
                                 f"feature manifest's {split} sessions {sorted(counts)}; rerun STE_forward.py",
                                 split_dir / (absent[0] if absent else ""))
        jobs += [(split, f, int(counts[f.stem])) for f in files]
    with util.atomic_dir(out) as tmp:
        params = (int(manifest["feature_dim"]), settings.numv, settings.time_edge, settings.cross_identity)
        summary = _run_jobs(jobs, tmp, params, workers)
        record = {
            "feature_manifest": str(manifest_path.resolve()),
            "feature_manifest_sha256": sha,
            "build": build,
            "feature_order": manifest["feature_order"],
            "feature_dims": manifest["feature_dims"],
            "feature_dim": manifest["feature_dim"],
            "splits": manifest["splits"],
            "encoder_sha256": manifest.get("encoder_sha256"),
            "sessions": summary,
        }
        util.write_json(record, tmp / graph_data.BUILD_FILE)
    counts = {s: sum(r["graphs"] for r in summary[s]) for s in summary}
    print(f"built {sum(counts.values())} graphs ({', '.join(f'{k} {v}' for k, v in counts.items())}) in {out}")
    return out


def _run_jobs(jobs: list[tuple[str, Path, int]], tmp: Path, params: tuple, workers: int) -> dict[str, list]:
    summary: dict[str, list] = {split: [] for split, _, _ in jobs}
    with tqdm(total=len(jobs), desc="sessions", unit="session") as bar:
        if workers <= 1:
            results = (build_session(f, n, tmp / split / "processed", *params) for split, f, n in jobs)
            for (split, _, _), result in zip(jobs, results, strict=True):
                summary[split].append(result)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(build_session, f, n, tmp / split / "processed", *params) for split, f, n in jobs]
                for (split, _, _), future in zip(jobs, futures, strict=True):
                    summary[split].append(future.result())
                    bar.update()
    return summary


def add_graph_args(parser: argparse.ArgumentParser) -> None:
    """The graph-configuration flags shared with train_val.py (defaults: config.GRAPH)."""
    parser.add_argument("--feature", default="features",
                        help="name of the feature set; node files in <repo>/<feature> unless --features_dir")
    parser.add_argument("--features_dir", type=Path, default=None)
    parser.add_argument("--graphs_dir", type=Path, default=config.GRAPHS_DIR)
    graph = config.GRAPH
    parser.add_argument("--numv", type=int, default=graph["numv"], help="nodes per graph")
    parser.add_argument("--time_edge", type=float, default=graph["time_edge"], help="longest edge in seconds")
    parser.add_argument("--cross_identity", choices=CROSS_IDENTITY, default=graph["cross_identity"],
                        help="cin: timed edges within one identity only; ciy: across identities too")
    parser.add_argument("--edge_weight", choices=("fsimy", "fsimn"), default=None,
                        help="accepted so that the original's commands run; changes nothing (see the module "
                             "docstring)")


def settings_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> GraphSettings:
    """The GraphSettings that add_graph_args' flags name (a bad value ends the script as argparse does), with
    a note on stderr when the original's --edge_weight was given."""
    if args.edge_weight is not None:
        print(f"note: --edge_weight {args.edge_weight} changes nothing here (no layer reads an edge weight; "
              "see generate_graph.py)", file=sys.stderr)
    try:
        return GraphSettings.from_args(args)
    except ValueError as err:
        parser.error(str(err))


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Build temporal graphs from node files.")
    add_graph_args(parser)
    parser.add_argument("--workers", type=int, default=1, help="sessions built in parallel")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder exists")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return argument_parser().parse_args(argv)


def run(argv: list[str] | None = None) -> Path:
    """generate_graph.py: the graph folder of the settings and folders its flags name (config.GRAPH by default),
    built or found up to date; returns its path."""
    cli = argument_parser()
    args = cli.parse_args(argv)
    return build_graphs(settings_from_args(cli, args), GraphFolders.from_args(args), args.workers, args.force)
