"""The runner as Luigi runs it: the ``luigi`` command with several workers, failures that stay
with their own generation, kills, edits that settle in one run, and the counts every view shares."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datafactory import SPEC
from conftest import most_calls_after_a_kill, server_cfg

REPO = Path(__file__).resolve().parents[1]
BIG_SPEC = SPEC.replace("  evaluation_llm: [srv-b]\n", "  evaluation_llm: [srv-b]\n  evaluation_replicate: 4\n")
N_BIG = 3 + 6 + 48
N_BIG_LLM = 3 + 3 + 48


def completions(server):
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


@pytest.fixture
def cfg(project, tmp_path):
    return server_cfg(tmp_path / "srv.cfg", project.server, {"batch_size": 2, "chunk_size": 10},
                      timeout=2, max_attempts=2, backoff_base=0.05, backoff_max=0.2)


def env_for(project, cfg) -> dict:
    return dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root), LUIGI_CONFIG_PATH=str(cfg))


def luigi_cmd(workers: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "luigi", "--module", "pipeline.tasks", "RunCohort", "--cohort-id", "t1",
            "--local-scheduler", "--no-lock", "--workers", str(workers), *extra]  # other tests run the same command


def daydream(project, cfg, *args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env_for(project, cfg),
                          capture_output=True, text=True, timeout=timeout)


def status_counts(project, cfg) -> dict[str, dict[str, int]]:
    """``daydream status`` parsed: stage -> state -> n."""
    r = daydream(project, cfg, "status", "t1")
    lines = r.stdout.splitlines()
    header = lines[1].split()
    return {parts[0]: dict(zip(header[1:], map(int, parts[1:])))
            for parts in (line.split() for line in lines[2:5])}


def finished(project) -> dict[str, str]:
    """gen_id -> finished_at of every generation whose output is whole (and no half file anywhere)."""
    out = {}
    for row in project.membership():
        d = project.paths.gen_dir(row["stage"], row["gen_id"])
        pm_path = d / "parsed_metadata.json"
        if pm_path.exists():
            pm = json.loads(pm_path.read_text())
            json.loads((d / "raw_metadata.json").read_text())
            if pm["success"]:
                assert hashlib.sha256((d / "parsed.txt").read_bytes()).hexdigest() == pm["parsed_sha256"]
                out[row["gen_id"]] = pm["finished_at"]
    return out


@pytest.mark.slow
def test_kill_9_of_a_four_worker_luigi_run_loses_nothing(project, cfg):
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(BIG_SPEC)
    project.server.latency = 0.1
    p = subprocess.Popen(luigi_cmd(4), cwd=REPO, env=env_for(project, cfg), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 90
    while project.server.successes < 20 and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)  # the worker and every forked task process
    p.wait()
    calls_before = project.server.successes  # by the kill (those in flight may still count after it)
    before = finished(project)
    assert 0 < len(before) < N_BIG
    project.server.latency = 0
    r = subprocess.run(luigi_cmd(4), cwd=REPO, env=env_for(project, cfg), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    after = finished(project)
    assert len(after) == N_BIG
    assert all(after[g] == t for g, t in before.items()), "finished work is reused, not redone"
    assert calls_before <= N_BIG_LLM + 4  # nothing ran twice before the kill
    assert project.server.successes <= most_calls_after_a_kill(project, N_BIG_LLM, calls_before, before)
    assert not list(project.root.rglob("*.tmp"))


OPENED = """
import sys, luigi, luigi.cmdline
from pipeline.tasks import CHUNKS_OPEN, CohortChunk

@CohortChunk.event_handler(luigi.Event.START)
def opened(task):  # in the process Luigi forked for the chunk
    if task.index >= CHUNKS_OPEN:
        with open(sys.argv[1], "a") as fh:
            fh.write(f"{task.index} {task.clone(index=task.index - CHUNKS_OPEN).complete()}\\n")

luigi.cmdline.luigi_run(sys.argv[2:])
"""


def test_four_workers_open_a_chunk_only_once_the_one_two_before_it_has_settled(project, cfg, tmp_path):
    """Idle workers would open every chunk at once (handing the scheduler every task), so a chunk
    waits for the one CHUNKS_OPEN before it; the next one opens while this one's calls run."""
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(BIG_SPEC)  # 3 chunks of 19
    project.server.latency = 0.05
    log = tmp_path / "opened.txt"
    r = subprocess.run([sys.executable, "-c", OPENED, str(log), *luigi_cmd(4)[3:]], cwd=REPO,
                       env=env_for(project, cfg), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(finished(project)) == N_BIG
    opened = [line.split() for line in log.read_text().splitlines()]
    assert opened and {index for index, _ in opened} == {"2"}
    assert all(before == "True" for _, before in opened), opened


STARTED = """
import sys, luigi, luigi.cmdline

@luigi.Task.event_handler(luigi.Event.START)
def started(task):  # each task Luigi runs: its family, and a chunk's index
    with open(sys.argv[1], "a") as fh:
        fh.write(f"{task.task_family} {getattr(task, 'index', '')}\\n")

luigi.cmdline.luigi_run(sys.argv[2:])
"""


def test_one_worker_opens_the_chunks_in_order(project, cfg, tmp_path):
    """A chunk starts the next one's calls behind its own as it finishes; one opened before the
    chunk ahead of it would hold the only worker on its generations while the chunk ahead waited
    with nothing started."""
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(BIG_SPEC)  # 3 chunks of 19
    log = tmp_path / "started.txt"
    r = subprocess.run([sys.executable, "-c", STARTED, str(log), *luigi_cmd(1)[3:]], cwd=REPO,
                       env=env_for(project, cfg), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(finished(project)) == N_BIG
    chunks = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("CohortChunk ")]
    first_starts = list(dict.fromkeys(chunks))
    assert first_starts == ["0", "1", "2"], log.read_text()


@pytest.mark.parametrize("lookahead, generation_tasks_run", [("true", False), ("false", True)])
def test_under_the_local_scheduler_what_the_executor_ran_needs_no_generation_task(project, tmp_path, lookahead,
                                                                                  generation_tasks_run):
    """A chunk waits for the members it started ahead (settle_ahead) and yields only what is left:
    Luigi runs no generation task for a generation the executor ran, and no prompt is called
    again. With calls ahead off, every generation is a task Luigi runs."""
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(BIG_SPEC)  # 3 chunks of 19
    project.server.latency = 0.15  # slow enough to be started ahead (AHEAD_MIN_LATENCY_S)
    cfg = server_cfg(tmp_path / "srv.cfg", project.server, {"chunk_size": 10, "lookahead": lookahead})
    log = tmp_path / "started.txt"
    r = subprocess.run([sys.executable, "-c", STARTED, str(log), *luigi_cmd(1)[3:]], cwd=REPO,
                       env=env_for(project, cfg), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(finished(project)) == N_BIG
    assert len(completions(project.server)) == N_BIG_LLM  # one call per generation (replicates share prompts)
    families = {line.split()[0] for line in log.read_text().splitlines()}
    assert {"RunCohort", "CohortChunk", "ReportSite"} <= families
    ran = families & {"DraftGeneration", "EssayGeneration", "EvaluationGeneration"}
    assert bool(ran) is generation_tasks_run, families


@pytest.mark.slow
def test_a_failing_generation_fails_only_itself_and_its_descendants(project, cfg):
    """One draft's response is always unusable: its essays and evaluations are blocked, the other
    drafts' lineages all run (also their batch-mates'), the site is built, the exit is non-zero,
    and the summary, RunCohort's message and `status` agree."""
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(BIG_SPEC)
    base = project.server.responder
    bad = "- Gamma"  # the draft of combo {alpha, gamma}... and only that one

    def responder(body):
        prompt = body["messages"][0]["content"]
        if prompt.startswith("TASK:DRAFT") and "- Alpha" in prompt and bad in prompt:
            return "too short"
        return base(body)

    project.server.responder = responder
    r = subprocess.run(luigi_cmd(2), cwd=REPO, env=env_for(project, cfg), capture_output=True, text=True, timeout=180)
    assert r.returncode == 30, r.stderr[-3000:]  # [retcode] task_failed
    summary = re.search(r"57 generations: (\d+) done, (\d+) failed, (\d+) not run because an ancestor failed", r.stderr)
    assert summary, r.stderr[-3000:]
    done, failed, blocked = map(int, summary.groups())
    assert (done, failed, blocked) == (N_BIG - 19, 1, 18)  # one draft; its 2 essays and 16 evaluations
    assert "too few non-empty lines" in r.stderr
    assert (project.root / "site" / "build" / "index.html").exists()
    counts = status_counts(project, cfg)
    assert counts["draft"] == {"done": 2, "stale": 0, "failed": 1, "pending": 0, "blocked": 0}
    assert counts["essay"]["blocked"] == 2 and counts["evaluation"]["blocked"] == 16
    assert sum(c["done"] for c in counts.values()) == done
    dq = (project.paths.reports_dir("t1") / "scores.csv").read_text()
    assert dq.count("\n") - 1 == 48  # every evaluation has a row, blocked ones included
    # fixed provider: the next run retries the failure and finishes the rest
    project.server.responder = base
    r = subprocess.run(luigi_cmd(2), cwd=REPO, env=env_for(project, cfg), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sum(c["done"] for c in status_counts(project, cfg).values()) == N_BIG


def test_template_edit_and_regenerated_parent_settle_in_one_run(project, cfg):
    assert project.run()
    template = project.root / "1_raw" / "templates" / "draft" / "d-block.txt"
    template.write_text(template.read_text() + "Be concrete.\n")
    before = status_counts(project, cfg)
    assert before["draft"]["stale"] == 3
    # children are stale too: their parent will be regenerated (judged after it, never against it)
    assert before["essay"]["stale"] == 6 and before["evaluation"]["stale"] == 12
    check = daydream(project, cfg, "check", "t1", "--list")
    assert check.returncode == 1
    assert len([line for line in check.stdout.splitlines() if line.startswith("stale\t")]) == 21
    base = project.server.responder
    project.server.responder = lambda b: base(b).replace("paragraph", "new paragraph")
    r = daydream(project, cfg, "run", "t1")
    assert r.returncode == 0, r.stderr[-3000:]
    after = status_counts(project, cfg)
    assert all(c["done"] == sum(c.values()) for c in after.values()), after
    check = daydream(project, cfg, "check", "t1")
    assert check.returncode == 0, check.stdout


def test_progress_bar_moves_forward_and_ends_at_the_total(project, cfg):
    r = daydream(project, cfg, "run", "t1", "--workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    seen = [int(n) for n in re.findall(r"(\d+)/21 \[", r.stderr)]
    assert seen and seen == sorted(seen) and seen[-1] == 21
    again = daydream(project, cfg, "run", "t1")
    assert again.returncode == 0
    assert re.findall(r"(\d+)/21 \[", again.stderr)[-1] == "21"  # a complete cohort shows its count


# -- one-line errors for user mistakes --------------------------------------------------------------


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def test_unreachable_or_malformed_scheduler_url(project, cfg):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    t0 = time.time()
    r = daydream(project, cfg, "run", "t1", "--scheduler-url", f"http://127.0.0.1:{port}/")
    one_line_error(r, "error[scheduler]", f"127.0.0.1:{port}")
    assert len(r.stderr.strip().splitlines()) == 1, "said before the estimate (nothing was done)"
    assert time.time() - t0 < 30
    one_line_error(daydream(project, cfg, "run", "t1", "--scheduler-url", "not-a-url"), "error[config]", "not-a-url")
    one_line_error(daydream(project, cfg, "run", "t1", "--workers", "0"), "error[config]", "--workers")


def test_bad_ids_and_ports_are_one_line_errors(project, cfg):
    assert project.run()
    one_line_error(daydream(project, cfg, "invalidate", "--model", "gpt-9"), "unknown model 'gpt-9'", "llm_models.csv")
    one_line_error(daydream(project, cfg, "invalidate", "--template", "v-nein"), "unknown template", "v-nine")
    one_line_error(daydream(project, cfg, "invalidate", "--gen-id", "d_nosuch"), "unknown gen_id")
    one_line_error(daydream(project, cfg, "status", "nosuch"), "unknown cohort 'nosuch'", "known: t1")
    one_line_error(daydream(project, cfg, "preview", "--port", "99999"), "--port 99999")


def test_status_into_a_closed_pipe_is_quiet(project, cfg):
    assert project.run()
    r = subprocess.run(f"{sys.executable} -m pipeline.cli status t1 | head -1", shell=True, cwd=REPO,
                       env=env_for(project, cfg), capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("cohort t1") and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


def test_luigi_command_outside_the_project_reads_its_config(project, cfg, tmp_path):
    """Started elsewhere, the `luigi` command still uses the project's luigi.cfg: its [retcode]
    makes a mistake exit non-zero (unhandled_exception = 40; Luigi's own default is 4)."""
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(project.root))
    env.pop("LUIGI_CONFIG_PATH", None)
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline.tasks", "RunCohort", "--cohort-id", "nosuch",
           "--local-scheduler", "--no-lock"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 40, r.stderr[-2000:]
    assert "unknown cohort 'nosuch'" in r.stderr and "Traceback" not in r.stderr


def test_orphans_of_an_interrupted_compile_can_be_removed(project, cfg):
    assert project.run()
    spec = project.root / "cohorts" / "t1" / "spec" / "config.yaml"
    spec.write_text(spec.read_text().replace("evaluation_template: [v-nine, v-ten]", "evaluation_template: [v-nine]"))
    assert daydream(project, cfg, "compile", "t1").returncode == 0
    listed = daydream(project, cfg, "check", "--list")
    orphans = [line.split("\t")[2] for line in listed.stdout.splitlines() if line.startswith("orphan\t")]
    assert len(orphans) == 6
    dry = daydream(project, cfg, "purge", "--orphans")
    assert dry.returncode == 0 and "would remove 6" in dry.stdout
    r = daydream(project, cfg, "purge", "--orphans", "--yes")
    assert r.returncode == 0 and "removed 6" in r.stdout
    assert not any(project.paths.gen_dir("evaluation", g).exists() for g in orphans)
    check = daydream(project, cfg, "check")
    assert check.returncode == 0, check.stdout


@pytest.mark.slow
@pytest.mark.luigid
def test_rerun_right_after_a_killed_run_against_luigid_completes(project, cfg, luigid):
    """A killed worker's tasks stay RUNNING in luigid until it is declared gone; a run started at
    once waits for that and finishes them instead of ending incomplete."""
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(BIG_SPEC)
    project.server.latency = 0.3
    cmd = luigi_cmd(4)
    cmd.remove("--local-scheduler")
    env = env_for(project, cfg)
    env["LUIGI_CONFIG_PATH"] = str(cfg)
    cfg.write_text(cfg.read_text() + f"[core]\nscheduler_url = {luigid.url}\n")
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 90
    while project.server.successes < 12 and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before = finished(project)
    assert 0 < len(before) < N_BIG
    project.server.latency = 0
    r = daydream(project, cfg, "run", "t1", "--scheduler-url", luigid.url, "--workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{N_BIG} generations: {N_BIG} done" in r.stderr
    after = finished(project)
    assert all(after[g] == t for g, t in before.items())
