"""run_pipeline.py --jobs: a fold's GNN stages trained in worker processes give the sequential run's
results, bit for bit, and are recorded in the fold's stage cache as the sequential run records them."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
from test_cv import cv_runner

import cross_validation
import run_pipeline
from encoder.core import util

pytestmark = pytest.mark.usefixtures("one_thread")

MODALITIES = "audio,eda"
SUBSETS = cross_validation.modality_subsets(MODALITIES)


@pytest.fixture(scope="module")
def ablations(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`--cv 2 --ablation --modalities audio,eda` of one tiny-preset copy with --jobs 1 and with --jobs 2,
    each into a work folder of its own; per jobs: the CV folder, what the run printed and `run(*flags)`."""
    base = tmp_path_factory.mktemp("jobs")
    data = base / "KEMDy20"
    shutil.copytree(tiny_raw, data)
    runs = {}
    with contextlib.ExitStack() as stack:
        for jobs in (1, 2):
            work = base / f"jobs_{jobs}"
            run = stack.enter_context(cv_runner(data, work))
            runs[jobs] = {"cv_dir": work / "results" / "KEMDy20_cv2", "run": run,
                          "out": run("--ablation", "--modalities", MODALITIES, "--jobs", str(jobs))}
        yield runs


def gnn_files(cv_dir: Path) -> dict[str, bytes]:
    """Every fold's GNN and temporal test predictions, by path under the CV folder."""
    files = [cv_dir / f"fold_{k}" / cross_validation.gnn_folder(m) / name for k in range(2) for m in SUBSETS
             for name in ("predictions_test.csv", "predictions_test_temporal.csv")]
    return {str(path.relative_to(cv_dir)): path.read_bytes() for path in files}


def summaries(cv_dir: Path) -> dict[str, bytes]:
    files = [cross_validation.summary_files(cv_dir, m)["json"] for m in SUBSETS] + [cv_dir / "ablation.json"]
    return {path.name: path.read_bytes() for path in files}


def test_jobs_give_the_sequential_results(ablations: dict) -> None:
    one, two = ablations[1], ablations[2]
    assert gnn_files(two["cv_dir"]) == gnn_files(one["cv_dir"])
    assert summaries(two["cv_dir"]) == summaries(one["cv_dir"])
    for k in range(2):
        for m in SUBSETS:
            tag = f"[fold {k} train_val {cross_validation.modality_tag(m)}]"
            assert f"{tag} running" in one["out"] and f"{tag} running" in two["out"]
            assert f"{tag} done, " in two["out"]  # said as each worker's stage finishes
            metrics = [util.read_json(ablations[j]["cv_dir"] / f"fold_{k}" / cross_validation.gnn_folder(m)
                                      / "metrics.json") for j in (1, 2)]
            assert metrics[0]["test"] == metrics[1]["test"] and metrics[0]["best"] == metrics[1]["best"]
    assert two["out"].strip().splitlines()[-1] == str(two["cv_dir"] / "ablation.json")


def test_workers_record_their_stages_as_the_sequential_run(ablations: dict) -> None:
    one, two = ablations[1], ablations[2]
    for k in range(2):
        states = [util.read_json(run["cv_dir"] / f"fold_{k}" / run_pipeline.STATE_FILE) for run in (one, two)]
        assert list(states[0]) == list(states[1]) == [
            "STE_train", "STE_forward", "generate_graph",
            *(f"train_val {cross_validation.modality_tag(m)}" for m in SUBSETS)]
    # the parallel run's cache serves a sequential rerun: nothing retrained
    assert two["run"]("--ablation", "--modalities", MODALITIES).count("] running") == 0
    # a parallel rerun trains only what is missing (one stage: in this process), as the sequential run did
    before = util.read_json(two["cv_dir"] / "fold_1" / run_pipeline.STATE_FILE)
    shutil.rmtree(two["cv_dir"] / "fold_1" / cross_validation.gnn_folder("eda"))
    out = two["run"]("--ablation", "--modalities", MODALITIES, "--jobs", "2")
    assert out.count("] running") == 1 and "[fold 1 train_val eda] running" in out
    assert "[fold 1 train_val audio] up to date, skipped" in out
    assert util.read_json(two["cv_dir"] / "fold_1" / run_pipeline.STATE_FILE) == before
    assert gnn_files(two["cv_dir"]) == gnn_files(one["cv_dir"])


@pytest.mark.parametrize("flags", [["--jobs", "0"], ["--jobs", "2"]])
def test_jobs_that_cannot_work_are_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        run_pipeline.parse_args(flags)
