"""Graph-edge benchmark: the project's vectorised builder against the naive O(n^2) pairwise rule.

One KEMDy20-scale session (about 8k nodes at 4 Hz, two speakers taking turns, 1536-d features) is
written as a node file, read back, sorted and cut into 2000-node graphs; both builders produce the
edges of every graph (default time edge 7.2 s, same identity), the edges are asserted identical, and
the last line printed is `ratio=<reference/ours> reference_s=<s> ours_s=<s>`. Both sides time the
same work (sort, cut, edges and edge attributes); the project's whole graph assembly (features,
labels, per-node metadata) is printed as well.

    python benchmarks/bench_graph.py [--nodes 8000] [--numv 2000] [--time_edge 7.2] [--cross_identity cin]
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from encoder.core import synthetic_nodes
from temporal_gnn import graph_building

REPEATS = 5  # the project's builder is timed as the median of this many runs; the reference runs once


def reference_edges(times: list[float], identities: list[str], time_edge: float,
                    cross_identity: str) -> list[tuple[int, int, float]]:
    """generate_graph.py's edge rule, pair by pair: (j, k, sign(t_j - t_k)) in (j, k) order."""
    edges = []
    n = len(times)
    for j in range(n):
        for k in range(n):
            delta = times[j] - times[k]
            same = cross_identity == "ciy" or identities[j] == identities[k]
            if delta == 0 or (abs(delta) <= time_edge and same):
                edges.append((j, k, float((delta > 0) - (delta < 0))))
    return edges


def reference_graphs(nodes: dict, numv: int, time_edge: float, cross_identity: str) -> list[list[tuple]]:
    """Sort by (time, identity, segment ID) with Python's sort, cut every numv, loop over pairs."""
    keys = list(zip(nodes["time_s"].tolist(), nodes["identity"].tolist(), nodes["segment_id"].tolist(),
                    strict=True))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    graphs = []
    for start in range(0, len(order), numv):
        idx = order[start:start + numv]
        graphs.append(reference_edges([keys[i][0] for i in idx], [keys[i][1] for i in idx], time_edge,
                                      cross_identity))
    return graphs


def project_graphs(nodes: dict, numv: int, time_edge: float, cross_identity: str) -> list[tuple]:
    """The project's ordering and edge builder, graph by graph: (edge_index, edge_attr) per graph."""
    order, codes = graph_building.session_order(nodes)
    times, codes = torch.from_numpy(nodes["time_s"]), torch.from_numpy(codes)
    return [graph_building.build_edges(times[idx], codes[idx], time_edge, cross_identity)
            for idx in torch.from_numpy(order).split(numv)]


def as_edge_list(graphs: list[tuple]) -> list[list[tuple]]:
    """Each graph's (j, k, attr) triples in (j, k) order, the reference's order."""
    return [sorted(zip(*edge_index.tolist(), edge_attr.tolist(), strict=True)) for edge_index, edge_attr in graphs]


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls and the last result."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs)), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8000)
    parser.add_argument("--numv", type=int, default=2000)
    parser.add_argument("--time_edge", type=float, default=7.2)
    parser.add_argument("--cross_identity", choices=("cin", "ciy"), default="cin")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_nodes.write_synthetic_nodes(Path(tmp), splits={"train": (1,)}, nodes_per_session=args.nodes,
                                              seed=0)
        nodes = graph_building.read_nodes(Path(tmp) / "features_train" / "Sess01.pkl", 1536)
    torch.set_num_threads(1)
    config = (nodes, args.numv, args.time_edge, args.cross_identity)
    project_graphs(*config)  # warm-up
    ours_s, graphs = timed(lambda: project_graphs(*config), REPEATS)
    full_s, _ = timed(lambda: list(graph_building.session_graphs(*config)), REPEATS)
    reference_s, reference = timed(lambda: reference_graphs(*config), 1)
    ours = as_edge_list(graphs)
    assert ours == reference, "edge sets differ"
    n_edges = sum(len(g) for g in ours)
    print(f"{len(nodes['time_s'])} nodes, {len(ours)} graphs, {n_edges} edges "
          f"({np.mean([len(g) for g in ours]):.0f} per graph), identical to the reference; "
          f"whole graphs with features {full_s:.4f} s")
    print(f"ratio={reference_s / ours_s:.1f} reference_s={reference_s:.3f} ours_s={ours_s:.4f}")


if __name__ == "__main__":
    main()
