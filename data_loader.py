"""The original's data_loader module: graph folders on disk, the build record and the graph dataset, now
temporal_gnn/graph_data.py; its names are re-exported here for code that imports data_loader."""

from temporal_gnn.graph_data import (
    BUILD_FILE,
    MANIFEST_FILE,
    NODE_LISTS,
    NODE_TENSORS,
    SPLITS,
    GraphDataset,
    check_manifest,
    flatten,
    graph_dir_name,
    load_graph,
    load_split,
    read_build_record,
    save_graph,
    speaker_windows,
    windows_per_batch,
)

__all__ = ["BUILD_FILE", "MANIFEST_FILE", "NODE_LISTS", "NODE_TENSORS", "SPLITS", "GraphDataset", "check_manifest",
           "flatten", "graph_dir_name", "load_graph", "load_split", "read_build_record", "save_graph",
           "speaker_windows", "windows_per_batch"]
