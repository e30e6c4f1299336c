"""The one atomic writer and the path resolver."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.errors import DaydreamError
from pipeline.store import DataPaths, atomic_write_json, atomic_write_text, dumps_json, read_json


@pytest.mark.parametrize("obj", [
    {"stage": "draft", "replicate": 3, "llm_model_id": None, "signature": ["a", "b", "3"], "cohorts": ["x", "y"],
     "combo": {"concept_ids": ["c-1", "c-2"], "level": "paragraph", "k": 2}},
    {"quote\"and\\slash": "tab\tnew\nline\x01ctl", "ünïcødé": "日本語 ✓ \u2028", "empty": {}, "none": [], "t": True, "f": False},
    {"nested": [[1, [2, {"b": 0, "a": -7}]], (1, "two")], "big": 10 ** 30},
    {"cost_usd": 0.0, "duration_s": 0.1234, "score": 6.5, "tiny": 1e-300, "huge": 1.7976931348623157e308,
     "neg": -0.0, "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "list": [0.1, float("nan")]},
    {1: "int key"}, {"path": Path("/x")}, {"a": {2: "an int key inside"}}, [], {}, "text", 3, None,
])
def test_canonical_json_is_the_json_modules_indented_text(obj):
    """``store.dumps_json`` writes what ``json.dumps(indent=2, sort_keys=True)`` writes, faster
    for the shapes the store's records have, and through the json module for anything else."""
    assert dumps_json(obj) == json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def test_atomic_write_skips_identical_content(tmp_path):
    p = tmp_path / "a" / "f.txt"
    assert atomic_write_text(p, "hello") is True
    mtime = p.stat().st_mtime_ns
    assert atomic_write_text(p, "hello") is False
    assert p.stat().st_mtime_ns == mtime
    assert atomic_write_text(p, "bye") is True and p.read_text() == "bye"
    assert not [f for f in p.parent.iterdir() if f.name.endswith(".tmp")]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_have_the_mode_open_would_give(tmp_path, umask):
    """0666 less the umask, as ``open()`` makes a file, not a temporary file's 0600."""
    old = os.umask(umask)
    try:
        p = tmp_path / "a" / "f.txt"
        atomic_write_text(p, "hello")
        atomic_write_text(p, "bye")  # a replacement too
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


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


def test_a_group_is_put_in_place_in_order_and_skips_what_is_unchanged(tmp_path):
    from pipeline.store import atomic_write_group

    d = tmp_path / "g"
    assert atomic_write_group([(d / "content.txt", b"one"), (d / "gone.txt", None), (d / "meta.json", b"{}")]) == 2
    (d / "gone.txt").write_text("x")
    first = (d / "content.txt").stat().st_mtime_ns
    # the unchanged content is not rewritten; None removes; the metadata comes after the content
    assert atomic_write_group([(d / "content.txt", b"one"), (d / "gone.txt", None), (d / "meta.json", b"{1}")]) == 2
    assert (d / "content.txt").stat().st_mtime_ns == first and not (d / "gone.txt").exists()
    assert sorted(p.name for p in d.iterdir()) == ["content.txt", "meta.json"]


def test_a_group_that_cannot_be_written_leaves_nothing_of_itself(tmp_path):
    """One file of the group cannot be staged: no file of the group changes, no temporary is left."""
    from pipeline.store import atomic_write_group

    d = tmp_path / "g"
    d.mkdir()
    (d / "a.txt").write_text("old")
    (d / "blocker").write_text("a file, not a directory")
    with pytest.raises(DaydreamError) as exc:
        atomic_write_group([(d / "a.txt", b"new"), (d / "blocker" / "b.txt", b"x"), (d / "meta.json", b"{}")])
    assert exc.value.code == "store" and "blocker" in str(exc.value.path)
    assert (d / "a.txt").read_text() == "old" and not (d / "meta.json").exists()
    assert sorted(p.name for p in d.iterdir()) == ["a.txt", "blocker"]


def test_kill_during_group_commits_never_shows_metadata_without_its_content(tmp_path):
    """SIGKILL at random moments of a process committing groups (eight contents, then a metadata
    naming their round) made durable on the writer's threads, on the real disk under the test's tmp dir, until
    some kill has landed between a group's renames: a metadata is never newer than a content
    beside it (a content may be newer: killed between the renames, which the classifier sees
    as a hash mismatch), and no file is half-written."""
    import json
    import random

    script = textwrap.dedent(f"""
        import json
        from pipeline.store import GroupWriter, stage_group
        root = {str(tmp_path)!r}
        writer = GroupWriter(4)
        i = 0
        while True:
            futures = []
            for g in range(16):
                i += 1
                files = [(f"{{root}}/g{{g}}/c{{k}}.txt", f"{{i}}\\n".encode() + b"x" * 5000) for k in range(8)]
                futures.append(writer.submit(stage_group(files + [(f"{{root}}/g{{g}}/gone.txt", None),
                                                                  (f"{{root}}/g{{g}}/meta.json", json.dumps({{"n": i}}).encode())])))
            for f in futures:
                f.result(10).publish()
            print(i, flush=True)
    """)
    rng = random.Random(26)
    kills = between = 0
    while kills < 60 and (kills < 4 or between == 0):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            proc.stdout.readline()  # a first round committed: the next ones are under way
            time.sleep(rng.uniform(0.0, 0.2))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        kills += 1
        for d in tmp_path.glob("g*"):
            meta = json.loads((d / "meta.json").read_text())["n"]
            rounds = set()
            for k in range(8):
                n, rest = (d / f"c{k}.txt").read_bytes().split(b"\n", 1)
                assert rest == b"x" * 5000, d / f"c{k}.txt"
                rounds.add(int(n))
            assert min(rounds) >= meta, f"{d}: metadata of round {meta}, contents of rounds {sorted(rounds)}"
            between += rounds != {meta}
    assert between > 0, f"no kill of {kills} landed between a group's renames"


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-each"])
def test_the_group_writer_syncs_off_the_caller_and_waits_bounded(tmp_path, monkeypatch, syncfs):
    """Groups synced together (one syncfs) or each with its fsyncs: each submitter hears of its
    own group, a failing one fails alone and leaves nothing of itself."""
    from pipeline import store
    from pipeline.store import GroupWriter, stage_group

    real_fsync = os.fsync

    def fsync(fd):  # the files staged in the "bad" directory cannot be synced
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path / "bad")):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    if syncfs:  # a syncfs over a batch that holds the bad group fails for every group in it
        monkeypatch.setattr(store, "_SYNCFS", store._SYNCFS or (lambda fd: 0))
        monkeypatch.setattr(store, "_syncfs", lambda fds, probes=None: [fsync(fd) for fd in fds])
    else:
        monkeypatch.setattr(store, "_SYNCFS", None)

    writer = GroupWriter(2)
    groups = [stage_group([(tmp_path / f"f{i}.txt", b"x"), (tmp_path / f"m{i}.json", b"{}")]) for i in range(20)]
    futures = [writer.submit(g) for g in groups]
    bad = writer.submit(stage_group([(tmp_path / "bad" / "one.txt", b"x")]))
    assert [f.result(10).publish() for f in futures] == [2] * 20
    with pytest.raises(DaydreamError, match="Input/output error"):
        bad.result(10)  # the submitter hears of a failure
    assert list((tmp_path / "bad").iterdir()) == []  # its temporary removed
    assert sorted(p.name for p in tmp_path.glob("f*.txt")) == sorted(f"f{i}.txt" for i in range(20))
    assert writer.close(10) is True
    late = stage_group([(tmp_path / "late.txt", b"x")])
    with pytest.raises(DaydreamError):
        writer.submit(late)
    assert not list(tmp_path.glob(".late.txt.*"))  # refused: its temporary removed
    # its threads end once it is closed and idle, within one wait
    deadline = time.monotonic() + 3 * GroupWriter.WAIT_S
    while writer._threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer._threads == []


def test_a_writer_that_fails_unexpectedly_leaves_no_submitter_waiting(tmp_path, monkeypatch):
    """Not the disk's error but a bug in the sync: each submitter hears of it at once, nothing
    of the group is left; a group that is published has its descriptors closed."""
    from pipeline import store
    from pipeline.store import GroupWriter, atomic_write_group, stage_group

    atomic_write_group([(tmp_path / "a.txt", b"a"), (tmp_path / "b.txt", b"b")])
    writer = GroupWriter(1)
    group = stage_group([(tmp_path / "c.txt", b"c")])
    assert writer.submit(group).result(10).publish() == 1 and group.fds == []  # closed by the publish

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "_SYNCFS", store._SYNCFS or (lambda fd: 0))
    monkeypatch.setattr(store, "_syncfs", broken)
    monkeypatch.setattr(GroupWriter, "_sync", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        writer.submit(stage_group([(tmp_path / "d.txt", b"d")])).result(5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "c.txt"]
    assert writer.close(5) is True


def test_a_groups_files_are_synced_at_once_on_the_writers_threads(tmp_path, monkeypatch):
    """With 100 ms fsyncs (and syncfs), five files committed inline take five fsyncs; on the
    writer's threads about one sync (fsyncs at once, or one syncfs for the group)."""
    from pipeline import store
    from pipeline.store import GroupWriter, atomic_write_group, stage_group

    def slow(real):
        def call(fd):
            time.sleep(0.1)
            return real(fd)
        return call

    monkeypatch.setattr(os, "fsync", slow(os.fsync))
    if store._SYNCFS is not None:
        monkeypatch.setattr(store, "_SYNCFS", slow(store._SYNCFS))
    files = lambda tag: [(tmp_path / f"{tag}{i}.txt", tag.encode()) for i in range(5)]  # noqa: E731
    t = time.monotonic()
    atomic_write_group(files("a"))
    inline = time.monotonic() - t
    writer = GroupWriter(8)
    writer.submit(stage_group(files("warm"))).result(10)  # its threads are made
    t = time.monotonic()
    assert writer.submit(stage_group(files("b"))).result(10).publish() == 5
    threaded = time.monotonic() - t
    assert writer.close(10)
    assert inline >= 0.5 and threaded < 0.3, (inline, threaded)
    assert sorted(p.read_text() for p in tmp_path.glob("b*.txt")) == ["b"] * 5


def test_dead_writers_temporaries_go_and_live_ones_stay(tmp_path):
    """A cohort's reports may be built by two runs at once: only the temporary files of a writer
    that is gone from this host are removed."""
    import subprocess
    import sys

    from pipeline.store import atomic_write_text, remove_dead_temporaries

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dead = tmp_path / f".leaderboard.csv.{gone}-3.tmp"
    live = tmp_path / f".factors.csv.{os.getpid()}-4.tmp"
    for p in (dead, live):
        p.write_text("half")
    atomic_write_text(tmp_path / "leaderboard.csv", "whole\n")
    assert remove_dead_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "leaderboard.csv"])
