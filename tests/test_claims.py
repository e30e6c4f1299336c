"""A process's claims are links to one owner file per run (``pipeline/store/claims.py``): no file
of their own, one heartbeat for all, the owner file gone with the last claim; a file of its own
where links cannot be made; a killed process's owner file swept."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import time

from pipeline.store import claims


def _dirs(tmp_path, n):
    gens = tmp_path / "gens"
    dirs = [gens / "draft" / f"d{i}" for i in range(n)]
    for d in dirs:
        d.mkdir(parents=True)
    return gens, dirs


def _acquire(d, run="run-1"):
    return asyncio.run(claims.acquire(str(d), run, timeout_s=60))


def test_a_runs_claims_share_one_owner_file_gone_with_the_last(tmp_path):
    gens, dirs = _dirs(tmp_path, 3)
    held = [_acquire(d) for d in dirs]
    owners = list((gens / claims.OWNERS).iterdir())
    assert len(owners) == 1
    inode = owners[0].stat().st_ino
    assert [os.stat(d / claims.CLAIM).st_ino for d in dirs] == [inode] * 3  # links, no file each
    assert owners[0].stat().st_nlink == 4
    body = json.loads((dirs[0] / claims.CLAIM).read_text())
    assert body["pid"] == os.getpid() and body["run"] == "run-1"
    # a second claim on a held generation is refused; another run gets an owner file of its own
    assert claims._create(str(dirs[1] / claims.CLAIM), "run-1") is None
    (gens / "draft" / "d3").mkdir()
    second = _acquire(gens / "draft" / "d3", run="run-2")
    assert len(list((gens / claims.OWNERS).iterdir())) == 2
    # one heartbeat written through the owner file is every claim's
    written = claims._refresh(held[0].shared.path, held[0].owner, held[0].shared.body)
    assert all(json.loads((d / claims.CLAIM).read_text())["heartbeat_at"] == written["heartbeat_at"] for d in dirs)
    for claim in held + [second]:
        claims.release(claim, 60)
    assert not any((d / claims.CLAIM).exists() for d in dirs)
    assert list((gens / claims.OWNERS).iterdir()) == []  # the owner files went with their last claim


def test_where_no_link_can_be_made_a_claim_is_a_file_of_its_own(tmp_path, monkeypatch):
    gens, dirs = _dirs(tmp_path, 2)

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    held = [_acquire(d, run="run-x") for d in dirs]
    assert all(c.shared is None for c in held)
    assert os.stat(dirs[0] / claims.CLAIM).st_ino != os.stat(dirs[1] / claims.CLAIM).st_ino
    assert claims._create(str(dirs[0] / claims.CLAIM), "run-x") is None  # still exclusive
    for claim in held:
        claims.release(claim, 60)
    assert not any((d / claims.CLAIM).exists() for d in dirs)


def test_a_killed_processs_claims_and_owner_file_are_stale_and_swept(tmp_path):
    gens, dirs = _dirs(tmp_path, 2)
    script = (f"import asyncio, sys, time; sys.path.insert(0, {os.getcwd()!r})\n"
              "from pipeline.store import claims\n"
              f"for d in {[str(d) for d in dirs]!r}:\n"
              "    asyncio.run(claims.acquire(d, 'run-k', timeout_s=60))\n"
              "print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert all(claims.is_live(str(d / claims.CLAIM), 60) for d in dirs)
        assert claims.sweep_owners(gens, 60) == 0  # its owner is alive: kept
    finally:
        proc.kill()
        proc.wait()
    assert not any(claims.is_live(str(d / claims.CLAIM), 60) for d in dirs)
    assert [why for _, why in claims.stale_claims(dirs, 60)] == [f"process {proc.pid} on {claims.HOST} is gone"] * 2
    assert claims.sweep(dirs, 60) == 2 and claims.sweep_owners(gens, 60) == 1
    assert list((gens / claims.OWNERS).iterdir()) == [] and not any((d / claims.CLAIM).exists() for d in dirs)
    # a claim is taken over at once once its owner is gone
    start = time.monotonic()
    claim = _acquire(dirs[0], run="run-after")
    assert time.monotonic() - start < 30 and claim.shared is not None  # not after the 60 s lease
    claims.release(claim, 60)
