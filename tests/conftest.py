"""Shared fixtures: the `tiny` synthetic KEMDy20 preset, generated once per test session."""

from collections.abc import Iterator
from pathlib import Path

import pytest

import encoder
from encoder.core import frames, synthetic, util


def pytest_configure(config: pytest.Config) -> None:
    """pytest resets the warning filters around collection and every test: give it encoder's filter
    (torch_geometric's import-time torch.jit.script FutureWarning, see encoder/__init__.py) as well."""
    ignored = encoder.IGNORED_WARNING
    config.addinivalue_line("filterwarnings",
                            f"ignore:{ignored['message']}:{ignored['category'].__name__}:{ignored['module']}")


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly generated `tiny` dataset (seed 0), without dataframe artifacts. Do not modify it:
    copy it (shutil.copytree) before injecting faults."""
    root = tmp_path_factory.mktemp("tiny_raw") / "KEMDy20"
    synthetic.make_dataset(root, preset="tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory, tiny_raw: Path) -> Path:
    """The `tiny` dataset with its dataframe artifacts built. Read-only for tests."""
    import shutil

    root = tmp_path_factory.mktemp("tiny") / "KEMDy20"
    shutil.copytree(tiny_raw, root)
    frames.write_frames(frames.build_frames(root), root)
    return root


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a module: small tensors gain nothing from two, OpenMP threads stall on a
    busy machine, and float sums depend on the thread count."""
    with util.torch_threads(1):
        yield
