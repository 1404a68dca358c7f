"""State files rewritten by a process that may be SIGKILLed at any moment stay whole."""

import os
import signal
import subprocess
import sys
import time

import pytest

from fedpipe.artifacts.files import atomic_write

WRITER = """
import sys
from pathlib import Path
from fedpipe.artifacts.files import atomic_write
path, n = Path(sys.argv[1]), 0
while True:
    n += 1
    atomic_write(path, str(n).encode() * 5000)  # long enough to be caught mid-write
"""


def test_a_writer_killed_at_any_moment_leaves_the_old_or_the_new_content(tmp_path):
    path = tmp_path / "sequence"
    for kill_after in (0.05, 0.1, 0.2, 0.3, 0.5):
        started = path.stat().st_mtime_ns if path.exists() else 0
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        deadline = time.monotonic() + 60  # the writer's start, however busy the machine
        while (path.stat().st_mtime_ns if path.exists() else 0) == started:
            assert time.monotonic() < deadline and writer.poll() is None, "the writer never wrote"
            time.sleep(0.01)
        time.sleep(kill_after)  # now it is rewriting the file in a loop
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        text = path.read_text()
        n = text[: len(text) // 5000]
        assert n.isdigit() and text == n * 5000  # one whole write, never a torn one
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # A kill between creating the temporary file and renaming it leaves only that file.
    others = [p.name for p in tmp_path.iterdir() if p.name != "sequence"]
    assert all(name.startswith(".sequence.") for name in others)


def test_a_failed_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(path, b"old")
    with pytest.raises(TypeError):
        atomic_write(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
