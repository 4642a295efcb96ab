"""The systems every table reports beside the GNN, as data (SPEC §5, docs/evaluation.md).

One `System` per row of every table: its name (metrics.json's `baselines` key, the summaries' row), how
the docs label it, its colour in the plots, where its test predictions are written, whether train_val.py
fits it beside the GNN (and how: `fit`, a "module:function" imported when it runs, so that this module
stays free of torch for cv_results.py and the docs), whether it may train in a forked process beside the
GNN, and whether its paired difference `gnn − name` is reported. train_val.py, cv_results.py,
model_folder.py, predict.py, docs/render_results.py and the plots iterate over `registered()`; adding a
system is one entry here and one module with its `fit`.

A `fit` takes a gnn_training.SystemContext and returns a gnn_training.SystemResult: the system is fitted on the
training sessions, selected on the validation sessions and scored on the test sessions the GNN sees.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GNN = "gnn"


@dataclass(frozen=True)
class System:
    name: str  # metrics.json baselines key; summaries' row name
    label: str  # how docs and plots name it
    colour: str
    predictions: str | None = None  # its test predictions' file in the GNN's results folder (None: not there)
    fit: str | Callable[..., Any] | None = None  # gnn_training's trainer ("module:function"); None: not trained there
    beside: bool = False  # may train in a forked process beside the GNN (writes nothing itself)
    compared: bool = True  # report the paired difference gnn − name
    description: str = ""

    @property
    def trained(self) -> bool:
        """Whether train_val.py fits it (and writes its predictions beside the GNN's)."""
        return self.fit is not None

    @property
    def difference(self) -> str:
        """Its paired difference's key in the summaries: gnn_minus_<name>."""
        return f"{GNN}_minus_{self.name}"

    def trainer(self) -> Callable[..., Any]:
        """The `fit` function, imported on first use."""
        if callable(self.fit):
            return self.fit
        if self.fit is None:
            raise ValueError(f"system {self.name!r} is not trained by train_val.py")
        module, function = self.fit.split(":")
        return getattr(importlib.import_module(module), function)


_REGISTRY: list[System] = [
    System("majority", "majority", "#b0b0b0", compared=False,
           description="the training segments' most frequent class, for every test segment"),
    System("encoder", "encoder", "#4c8bd6",
           description="the encoder alone: the mean of its fused head's node probabilities (STE_forward.py)"),
    System("temporal", "GRU", "#59a14f", predictions="predictions_test_temporal.csv",
           fit="temporal_gnn.gnn_training:fit_temporal", beside=True,
           description="a GRU over each speaker's nodes, no graph (temporal_model.py)"),
    System("classical", "classical", "#9c6ade", predictions="predictions_test_classical.csv",
           fit="temporal_gnn.classical:fit_classical",
           description="hand-crafted per-segment speech, EDA and TEMP statistics, participant-normalised, "
                       "class-balanced logistic regression (classical.py)"),
    System("fusion", "fusion", "#c9a227", predictions="predictions_test_fusion.csv",
           fit="temporal_gnn.late_fusion:fit_fusion",
           description="the classical system's and the GNN's segment probabilities fused, argmax(log p_classical + "
                       "w log p_GNN), w chosen on the validation sessions (late_fusion.py); fitted after the GNN"),
    System(GNN, "GNN", "#e07b39", compared=False, description="the three-branch graph network (gnn_model.py)"),
]


def registered() -> list[System]:
    """Every system, the GNN last (the order of every table's rows)."""
    return list(_REGISTRY)


def names() -> tuple[str, ...]:
    return tuple(system.name for system in _REGISTRY)


def get(name: str) -> System:
    for system in _REGISTRY:
        if system.name == name:
            return system
    raise KeyError(f"no system {name!r}; registered: {', '.join(names())}")


def trained() -> list[System]:
    """The systems train_val.py fits beside the GNN, in table order."""
    return [system for system in _REGISTRY if system.trained]


def differences() -> dict[str, str]:
    """gnn_minus_<name> -> name for every compared system, in table order."""
    return {system.difference: system.name for system in _REGISTRY if system.compared}


def colours() -> dict[str, str]:
    return {system.name: system.colour for system in _REGISTRY}


def register(system: System) -> None:
    """Add `system` before the GNN (a research extension, or a test's toy system); ValueError if its name is
    taken. `unregister` takes it out again."""
    if system.name in names():
        raise ValueError(f"a system named {system.name!r} is registered already")
    _REGISTRY.insert(len(_REGISTRY) - 1, system)


def unregister(name: str) -> None:
    _REGISTRY.remove(get(name))
