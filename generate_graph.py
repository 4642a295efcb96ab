"""Build forward/backward/undirected temporal graphs from the encoder stage's node files.

    python generate_graph.py [--feature features] [--numv 2000] [--time_edge 7.2]
                             [--cross_identity {cin,ciy}] [--workers 1] [--force]

The command of temporal_gnn/graph_building.py (graph_building.run), which documents the graphs, their
settings and the folder they are written to.
"""

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
from encoder.core import util
from temporal_gnn import graph_building

if __name__ == "__main__":
    util.run_cli(graph_building.run)
