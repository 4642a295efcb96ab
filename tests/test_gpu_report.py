"""benchmarks/gpu_report.py on a recorded work folder of benchmarks/gpu_check.sh (tests/data/gpu_check: a
full-size CUDA run whose tests part timed out and whose gnn part failed): the headline figures of the JSON,
failed parts recorded as failed with their reasons, per-test results read from a `pytest -v` log cut short by
the kill, and the JUnit report preferred when pytest wrote one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from script_module import load_script

from encoder.core import config

SCRIPT = config.REPO_ROOT / "benchmarks" / "gpu_report.py"
RECORDED = Path(__file__).parent / "data" / "gpu_check"
TESTS = "tests/test_cuda.py::test_"

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="3">
<testcase classname="tests.test_cuda" name="test_one_amp_training_step_lowers_the_loss" time="3.1" />
<testcase classname="tests.test_cuda" name="test_float16_and_float32_embeddings_agree" time="9.0">
<failure message="AssertionError: relative error 0.02 &gt;= 0.01&#10;assert 0.02 &lt; 0.01">trace</failure>
</testcase>
<testcase classname="tests.test_cuda" name="test_autocast_runs_the_encoder_in_float16" time="0.4" />
</testsuite></testsuites>
"""


@pytest.fixture(scope="module")
def gpu_report() -> ModuleType:
    return load_script(SCRIPT)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A copy of the recorded work folder, to change."""
    return Path(shutil.copytree(RECORDED, tmp_path / "work"))


def write_log(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tests.log"
    path.write_text(text, encoding="utf-8")
    return path


def test_report_of_the_recorded_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--work", str(RECORDED), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr  # a part failed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["device"] == "NVIDIA H200" and report["torch"] == "2.11.0+cu128"
    assert report["cuda_available"] is True and report["quick"] is False
    # no cuda_tests.xml: the counts come from the streamed log, the test killed mid-run counted as failed
    assert report["cuda_tests_passed"] == 3 and report["cuda_tests_failed"] == 2
    assert report["cuda_tests_skipped"] == 0
    assert report["cuda_tests"]["source"] == "log" and report["cuda_tests"]["not_run"] == 3
    assert report["cuda_tests"]["unfinished"] == [f"{TESTS}encoder_checkpoint_written_on_cuda_predicts_on_cpu"]
    assert "timed out after 113 s" in report["notes"]["cuda_tests_failed"]
    assert report["demo_end_to_end_s"] == 71.4
    assert report["demo"]["stage_times_s"]["STE_train"] == 21.0
    assert report["extract_nodes_per_s_fp32"] == 2210.5
    assert report["extract_nodes_per_s_amp"] == 3120.25
    assert report["extract_nodes_per_s_batch1"] == 61.5
    assert report["encoder_train_clips_per_s"] == 905.75
    # the failed gnn part: null figures with the reason, its status and the end of its output
    assert report["gnn_epoch_s_300k"] is None and report["gnn_peak_mem_gb"] is None
    for key in ("gnn_epoch_s_300k", "gnn_peak_mem_gb"):
        assert "failed (exit status 1)" in report["reasons"][key] and "OutOfMemoryError" in report["reasons"][key]
    assert report["parts"]["gnn"]["status"] == "failed (exit status 1)"
    assert any("CUDA out of memory" in line for line in report["parts"]["gnn"]["log_tail"])
    assert report["parts"]["tests"]["status"] == "timed out after 113 s"
    assert report["parts"]["install"]["librosa_warmup"] == "ok"
    assert report["failed_parts"] == ["gnn", "tests"]
    printed = done.stdout.splitlines()
    assert printed[-2:] == ["failed parts: gnn, tests", str(out)]
    assert any(line.split()[:2] == ["gnn_epoch_s_300k", "None"] and "OutOfMemoryError" in line for line in printed)


def test_a_part_that_did_not_run_is_reported_so(gpu_report: ModuleType, work: Path) -> None:
    (work / "status" / "demo.json").unlink()
    (work / "logs" / "demo.log").unlink()
    (work / "logs" / "tests.log").unlink()
    report = gpu_report.build_report(work, quick=False)
    assert report["demo_end_to_end_s"] is None
    assert report["reasons"]["demo_end_to_end_s"] == "no stage-times line; demo part: did not run"
    assert report["cuda_tests_passed"] is None and report["cuda_tests_failed"] is None
    assert report["reasons"]["cuda_tests_failed"] == \
        "no pytest report nor per-test lines; tests part: timed out after 113 s"


def test_junit_report_is_preferred_to_the_log(gpu_report: ModuleType, work: Path) -> None:
    (work / "cuda_tests.xml").write_text(JUNIT, encoding="utf-8")
    report = gpu_report.build_report(work, quick=False)
    assert (report["cuda_tests_passed"], report["cuda_tests_failed"]) == (2, 1)
    assert report["cuda_tests"]["source"] == "junit" and "cuda_tests_failed" not in report["notes"]
    assert report["cuda_tests"]["failures"] == [
        "tests.test_cuda.test_float16_and_float32_embeddings_agree: AssertionError: relative error 0.02 >= 0.01"]


def test_truncated_log_counts(gpu_report: ModuleType, tmp_path: Path) -> None:
    counts = gpu_report.pytest_log_counts(RECORDED / "logs" / "tests.log")
    assert {k: counts[k] for k in ("passed", "failed", "skipped", "collected", "not_run")} == \
        {"passed": 3, "failed": 2, "skipped": 0, "collected": 8, "not_run": 3}
    assert counts["failures"] == [
        f"{TESTS}float16_and_float32_embeddings_agree: failed (no message in the log)",
        f"{TESTS}encoder_checkpoint_written_on_cuda_predicts_on_cpu: killed while running (no outcome in the log)"]


def test_complete_log_with_teardown_error_skips_and_warnings(gpu_report: ModuleType, tmp_path: Path) -> None:
    log = write_log(tmp_path, f"""collecting ... collected 4 items

{TESTS}a PASSED                                              [ 25%]
{TESTS}a ERROR                                               [ 25%]
{TESTS}b SKIPPED (needs a CUDA device)                       [ 50%]
{TESTS}c[cuda:0] PASSED                                      [ 75%]
{TESTS}d FAILED                                              [100%]

=============================== warnings summary ===============================
{TESTS}c[cuda:0]
  /x/y.py:1: UserWarning: something

=========================== short test summary info ============================
PASSED {TESTS}c[cuda:0]
SKIPPED [1] tests/test_cuda.py:40: needs a CUDA device (torch.cuda.is_available() False)
ERROR {TESTS}a - RuntimeError: teardown broke
FAILED {TESTS}d - AssertionError: loss 1.2 -> 1.3 after one AMP step
""")
    counts = gpu_report.pytest_log_counts(log)
    assert (counts["passed"], counts["failed"], counts["skipped"]) == (1, 2, 1)
    assert counts["unfinished"] == [] and counts["not_run"] == 0
    assert counts["failures"] == [f"{TESTS}a: RuntimeError: teardown broke",
                                  f"{TESTS}d: AssertionError: loss 1.2 -> 1.3 after one AMP step"]
    assert counts["skip_reasons"] == ["needs a CUDA device (torch.cuda.is_available() False)"]


def test_log_without_a_test_line_gives_no_counts(gpu_report: ModuleType, tmp_path: Path) -> None:
    """Killed while collecting (or pytest missing): no counts rather than zero failures."""
    assert gpu_report.pytest_log_counts(write_log(tmp_path, "===== test session starts =====\ncollecting ... ")) \
        is None
    assert gpu_report.pytest_log_counts(write_log(tmp_path, "/usr/bin/python3: No module named pytest\n")) is None
    assert gpu_report.pytest_log_counts(tmp_path / "missing.log") is None
