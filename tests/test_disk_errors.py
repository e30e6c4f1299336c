"""Causes shown: a full disk or a filesystem that refuses writes, anywhere in a command, is one
line ``error[store]: <path>: <reason>`` with exit status 2 and no traceback.

The real conditions are made with real filesystems: a tmpfs a few hundred KB or MB large (full
partway through a run, in the generations or in the site) and a tmpfs remounted read-only.
Mounting needs root (CI runs as root); the translation itself is also tested without it.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import DaydreamError, from_os_error

REPO = Path(__file__).resolve().parents[1]


def test_os_errors_naming_a_file_become_one_store_error(tmp_path):
    missing = tmp_path / "nowhere" / "file.txt"
    with pytest.raises(OSError) as info:
        missing.read_text()
    error = from_os_error(info.value)
    assert error.code == "store" and error.message == f"{missing}: No such file or directory"
    with pytest.raises(OSError) as info:
        os.replace(tmp_path / "absent", tmp_path / "other")
    assert from_os_error(info.value).message.startswith(f"{tmp_path / 'absent'} -> {tmp_path / 'other'}: ")
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:
            os.write(fd, b"x")
    finally:
        os.close(fd)
    assert info.value.errno == errno.ENOSPC and from_os_error(info.value) is None  # no path to name: not ours
    assert from_os_error(ValueError("a bug")) is None
    own = DaydreamError("spec", "bad")
    assert from_os_error(own) is own


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Mount a tmpfs of a given size at a fresh directory; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the suite as root)")
    mounted = []

    def mount(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], check=True)
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def _data_root(root: Path) -> Path:
    shutil.copytree(REPO / "data" / "1_raw", root / "1_raw")
    shutil.copytree(REPO / "data" / "cohorts" / "demo" / "spec", root / "cohorts" / "demo" / "spec")
    return root


def daydream(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
    env["DAYDREAM_DATA_ROOT"] = str(root)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)


def assert_one_line(r: subprocess.CompletedProcess, root: Path, reason: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    errors = [line for line in r.stderr.splitlines() if "error" in line.split(":")[0]]
    assert len(errors) == 1, r.stderr[-3000:]
    line = r.stderr.rstrip().splitlines()[-1]
    assert line == errors[0] and line.startswith("error[store]: ") and line.endswith(reason), line
    assert str(root) in line  # names the path it could not write


# The demo's generations take about 1 MB and its site about 10 MB: a disk full in the first
# drafts, and one full while the site is built.
@pytest.mark.parametrize("size", ["600k", "12m"])
def test_disk_full_during_a_run(mount_tmpfs, size):
    root = _data_root(mount_tmpfs("disk", size) / "data")
    assert_one_line(daydream(root, "run", "demo"), root, "No space left on device")


def test_read_only_filesystem(mount_tmpfs):
    point = mount_tmpfs("ro", "4m")
    root = _data_root(point / "data")
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
    for command in (("compile", "demo"), ("run", "demo")):
        assert_one_line(daydream(root, *command), root, "Read-only file system")
