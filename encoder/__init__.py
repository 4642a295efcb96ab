"""The project's package. Importing it installs the one warning filter every script and test needs. The
filter is process-wide state, so it is installed where a process starts, before torch_geometric is
imported: every script that loads torch_geometric (train_val.py, generate_graph.py, predict.py,
run_pipeline.py, the graph benchmarks) imports this package as its first import; library modules
(temporal_gnn's, encoder.core's) do not. tests/conftest.py hands the same filter to pytest, which
resets the filters around collection and each test.

torch_geometric 2.8 calls torch.jit.script at import time (nn/pool/connect/base.py and select/base.py),
which torch 2.14 answers with `FutureWarning: torch.jit.script is deprecated` on every run: a message
about PyG's internals that a user of this project can do nothing about (upstream:
pyg-team/pytorch_geometric#10697). Exactly that warning is ignored: its message, its category and the
module that raises it (torch.jit._script); every other warning is shown as before.
"""

import warnings

IGNORED_WARNING = {"message": r"`torch\.jit\.script` is deprecated", "category": FutureWarning,
                   "module": r"torch\.jit\._script"}

warnings.filterwarnings("ignore", **IGNORED_WARNING)
