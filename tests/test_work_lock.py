"""One run_pipeline.py per work folder: a second run on the same --work is refused at once, in one line
naming the first one's pid, before any stage runs; a lock left by a killed run blocks nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from encoder.core import config, layout, util

HOLD = ("import sys, time; from pathlib import Path; from encoder.core import util; "
        "lock = util.exclusive_lock(Path(sys.argv[1]), 'run_pipeline.py'); lock.__enter__(); "
        "print('held', flush=True); time.sleep(120)")


def holder(work: Path) -> subprocess.Popen:
    """A process holding the work folder's lock until it is killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(work / layout.LOCK_FILE)], cwd=config.REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_on_the_same_work_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    work, data = tmp_path / "work", tmp_path / "data"
    data.mkdir()  # an (empty) dataset root: the frames stage would refuse it, were it to run
    first = holder(work)
    try:
        second = subprocess.run([sys.executable, "run_pipeline.py", "--preset", "tiny", "--work", str(work),
                                 "--data", str(data)], cwd=config.REPO_ROOT, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"another run_pipeline.py (pid {first.pid}) is running" in lines[0]
        assert str(work / layout.LOCK_FILE) in lines[0]
        assert sorted(p.name for p in work.iterdir()) == [layout.LOCK_FILE]  # no stage ran, nothing written
    finally:
        first.kill()
        first.wait()


def test_a_killed_runs_lock_blocks_nothing(tmp_path: Path) -> None:
    first = holder(tmp_path)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert (tmp_path / layout.LOCK_FILE).read_text().strip() == str(first.pid)  # the file stays ...
    with util.exclusive_lock(tmp_path / layout.LOCK_FILE, "run_pipeline.py"):  # ... the lock does not
        assert (tmp_path / layout.LOCK_FILE).read_text().strip() == str(os.getpid())
        again = util.exclusive_lock(tmp_path / layout.LOCK_FILE, "run_pipeline.py")
        with pytest.raises(util.DataError, match=f"pid {os.getpid()}"):  # held: refused, even to this process
            again.__enter__()
