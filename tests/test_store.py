"""The one atomic writer and the path resolver."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pipeline.errors import DaydreamError
from pipeline.store import DataPaths, atomic_write_json, atomic_write_text, read_json


def test_atomic_write_skips_identical_content(tmp_path):
    p = tmp_path / "a" / "f.txt"
    assert atomic_write_text(p, "hello") is True
    mtime = p.stat().st_mtime_ns
    assert atomic_write_text(p, "hello") is False
    assert p.stat().st_mtime_ns == mtime
    assert atomic_write_text(p, "bye") is True and p.read_text() == "bye"
    assert not [f for f in p.parent.iterdir() if f.name.endswith(".tmp")]


def test_kill_during_writes_never_leaves_a_partial_file(tmp_path):
    """A writer killed with SIGKILL mid-loop leaves only complete versions of the file."""
    target = tmp_path / "big.txt"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from pipeline.store import atomic_write_text
        i = 0
        while True:
            i += 1
            atomic_write_text(Path({str(target)!r}), str(i % 10) * 2_000_000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(200):
            if target.exists():
                break
            import time; time.sleep(0.02)
        import time; time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    data = target.read_text()
    assert len(data) == 2_000_000 and len(set(data)) == 1


def test_read_only_root_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        # root ignores permission bits; use a path under a regular file instead (ENOTDIR)
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(DaydreamError) as exc:
            atomic_write_text(blocker / "sub" / "f.txt", "data")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(DaydreamError) as exc:
            atomic_write_text(ro / "f.txt", "data")
    assert exc.value.code == "store" and "cannot write" in exc.value.message


def test_corrupt_json_is_a_store_error(tmp_path):
    p = tmp_path / "m.json"
    p.write_text("{not json")
    with pytest.raises(DaydreamError) as exc:
        read_json(p)
    assert exc.value.code == "store" and str(p) in exc.value.message
    assert read_json(tmp_path / "absent.json") is None
    atomic_write_json(p, {"b": 1, "a": [1, 2]})
    assert read_json(p) == {"a": [1, 2], "b": 1}


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\0b", "x" * 200])
def test_paths_reject_unsafe_ids(tmp_path, bad):
    paths = DataPaths(tmp_path)
    with pytest.raises(DaydreamError) as exc:
        paths.gen_dir("draft", bad)
    assert exc.value.code == "unsafe_id"
    with pytest.raises(DaydreamError):
        paths.cohort_dir(bad)


def test_gen_paths_stay_under_root(tmp_path):
    paths = DataPaths(tmp_path)
    p = paths.gen_file("essay", "e_abc", "parsed.txt")
    assert p == tmp_path / "gens" / "essay" / "e_abc" / "parsed.txt"
    with pytest.raises(DaydreamError):
        paths.gen_file("essay", "e_abc", "../../x")
    with pytest.raises(DaydreamError):
        paths.gen_dir("nonsense", "e_abc")
