"""Kill -9 at random moments: runs of one cohort (``daydream run`` or the ``luigi`` command, random
``--workers``, sometimes two at once) against the test LLM server with faults, each killed at a
random moment, then one clean run. Shared by ``tests/test_chaos.py`` (a fast subset) and
``bench/chaos.py`` (more iterations, JSON).

What must hold afterwards (``check``):

* every generation done, its files intact, no temporary file under the data root, no claim left,
  ``daydream check`` clean;
* at each kill, every generation that looks done has all its files intact (its parsed text, raw
  response and prompt match the hashes its records name: a commit's metadata is never in place
  before its content), and none done at one kill is not done at a later one (nothing finished
  is lost);
* no call for a generation once it was done: at each kill the done generations are noted, and
  no request for a prompt begins after a moment when every generation with that prompt was done
  (replicates share a prompt);
* successful calls ≤ the LLM generations + the calls in flight at the kills, for every prompt
  and in all. Calls in flight at a kill, per prompt: the requests for it made by the runs killed
  then, at most one per generation with that prompt not done just before the kill (a killed call
  is one whose answer was not written; a generation is worked on by one process at a time). Each
  run sends an API key of its own (``KEY_ENV``: the caller's config names it), so a request is
  known by its run, not by when the server read it: on a loaded machine the server may read a
  killed run's last request after the kill. The bound is generous by the calls a killed run had
  made and seen answered, never short.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SPEC = """
combos:
  - concepts: [c-alpha, c-beta, c-gamma]
    k: 2
    level: paragraph
axes:
  draft_template: [d-block]
  draft_llm: [srv-a]
  draft_replicate: {drafts}
  evaluation_template: [v-nine, v-ten]
  evaluation_llm: [srv-b]
  evaluation_replicate: 2
rules:
  tuples:
    essay_modes:
      axes: [essay_template, essay_llm]
      items: [[e-llm, srv-a], [e-copy, None]]
"""
FAULTS = ("500", "503", "drop", "malformed")  # each retried by the provider: none fails a generation
FAULT_RATE = 0.2


KEY_ENV = "DAYDREAM_CHAOS_RUN_KEY"  # the provider's api_key_env in the config the caller passes


def prompt_of(body) -> str | None:
    messages = body.get("messages") if isinstance(body, dict) else None
    return str(messages[-1].get("content", "")) if messages else None


class Recorder:
    """The server's rule: picks faults (at most one per prompt, so the provider's retries always
    get through, replicates sharing a prompt included) and records when each request for each
    prompt began; ``bodies`` the request bodies, in the same order (the server's record of each,
    with the key that tells its run, holds the same object)."""

    def __init__(self, rng: random.Random):
        self.rng, self.lock = rng, threading.Lock()
        self.began: list[tuple[float, str, str]] = []  # time, prompt, mode
        self.bodies: list[dict] = []
        self.faulted: set[str] = set()

    def __call__(self, body) -> str | None:
        prompt = prompt_of(body)
        with self.lock:
            fault = prompt not in self.faulted and self.rng.random() < FAULT_RATE
            mode = self.rng.choice(FAULTS) if fault else "ok"
            if fault:
                self.faulted.add(prompt)
            self.began.append((time.time(), prompt, mode))
            self.bodies.append(body)
        return None if mode == "ok" else mode


def _env(root: Path, cfg: Path, run: str = "final") -> dict:
    return dict(os.environ, DAYDREAM_DATA_ROOT=str(root), LUIGI_CONFIG_PATH=str(cfg), **{KEY_ENV: f"run-{run}"})


def start_run(root: Path, cfg: Path, rng: random.Random, cohort: str, run: int) -> tuple[subprocess.Popen, dict]:
    workers = rng.choice((1, 1, 2, 3))
    if rng.random() < 0.3:
        luigi = str(Path(sys.executable).parent / "luigi")
        cmd = [luigi, "--module", "pipeline.tasks", "RunCohort", "--cohort-id", cohort, "--local-scheduler",
               "--workers", str(workers)]
        kind = "luigi"
    else:
        cmd = [sys.executable, "-m", "pipeline.cli", "run", cohort, "--workers", str(workers)]
        kind = "daydream"
    proc = subprocess.Popen(cmd, env=_env(root, cfg, str(run)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return proc, {"command": kind, "workers": workers, "key": f"Bearer run-{run}"}


def _done_now(paths, rows, torn: list[str] | None = None) -> set[tuple[str, str]]:
    """The generations whose record says done; ``torn`` hears of each one whose files do not
    match what its records name (read record first, so a commit under way shows as not done)."""
    import hashlib

    def sha(path) -> str | None:
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None

    done = set()
    for r in rows:
        try:
            pm = json.loads(paths.gen_file(r["stage"], r["gen_id"], "parsed_metadata.json").read_text())
        except (OSError, ValueError):
            continue
        if not pm.get("success"):
            continue
        done.add((r["stage"], r["gen_id"]))
        if torn is None:
            continue
        d = paths.gen_dir(r["stage"], r["gen_id"])
        try:
            raw_md = json.loads((d / "raw_metadata.json").read_text())
        except (OSError, ValueError):
            raw_md = {}
        wrong = [name for name, want in (("parsed.txt", pm.get("parsed_sha256")), ("raw.txt", raw_md.get("raw_sha256")),
                                         ("prompt.txt", raw_md.get("prompt_sha256"))) if sha(d / name) != want]
        if wrong:
            torn.append(f"{r['stage']} {r['gen_id']} done with {', '.join(wrong)} not matching its records")
    return done


def _prompts(paths, rows) -> dict[tuple[str, str], str]:
    return {(r["stage"], r["gen_id"]): paths.gen_file(r["stage"], r["gen_id"], "prompt.txt").read_text()
            for r in rows if r["mode"] == "llm"}


STARTUP_WAIT_S = 15.0  # at most this long for a run's first call before a kill mid-calls


def _pick_moment(rng: random.Random, recorder: Recorder, live, kill_after: tuple[float, float], *,
                 cohort_done: bool) -> None:
    """Sleep until the kill: a quarter of the kills at any moment from the start (start-up,
    compiling, checking), the rest at a moment once calls are being made (a run's start-up
    takes seconds on a loaded machine, and kills timed from the start would rarely reach a call);
    once the cohort is done, any moment of the no-op run (reports, site)."""
    if cohort_done or rng.random() < 0.25:
        time.sleep(rng.uniform(*kill_after))
        return
    seen, deadline = len(recorder.began), time.monotonic() + STARTUP_WAIT_S
    while len(recorder.began) == seen and time.monotonic() < deadline and any(p.poll() is None for p, _ in live):
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, kill_after[1] - kill_after[0]))


def run_chaos(root: Path, cfg: Path, server, *, iterations: int, seed: int, cohort: str = "t1",
              kill_after: tuple[float, float] = (0.3, 3.0), latency: float = 0.1) -> dict:
    """``iterations`` kills, then a clean run; returns what happened and what was checked
    (``problems`` empty when everything held)."""
    from pipeline.design.cohort import read_membership
    from pipeline.store import DataPaths

    rng = random.Random(seed)
    recorder = Recorder(rng)
    server.rule, server.latency = recorder, latency
    paths = DataPaths(root)
    live: list[tuple[subprocess.Popen, dict]] = []
    # per kill: when the store was looked at, done then, done just before, the killed runs' keys
    kills, snapshots = [], []
    runs = 0
    torn: list[str] = []  # done generations whose files did not match their records at a kill
    started = time.time()
    for i in range(iterations):
        live.append(start_run(root, cfg, rng, cohort, runs := runs + 1))
        if rng.random() < 0.3:  # a second run of the same cohort alongside
            live.append(start_run(root, cfg, rng, cohort, runs := runs + 1))
        _pick_moment(rng, recorder, live, kill_after, cohort_done=bool(kills) and kills[-1]["done"] == kills[-1]["of"] > 0)
        victims = [p for p in live if rng.random() < 0.7] or live[:1]
        rows = read_membership(paths, cohort) if paths.membership_csv(cohort).exists() else []
        done_before = _done_now(paths, rows)  # a call of these was written: a kill cannot lose it
        for proc, info in victims:
            info["alive_at_kill"] = proc.poll() is None
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver, its executor and forked workers
            except ProcessLookupError:
                pass
            proc.wait()
        at = time.time()  # after the kills
        live = [(p, info) for p, info in live if all(p is not v for v, _ in victims)]
        rows = read_membership(paths, cohort) if paths.membership_csv(cohort).exists() else []
        done = _done_now(paths, rows, torn)
        snapshots.append((time.time(), done, done_before,  # done by this time: no call after it
                          {info["key"] for _, info in victims}))
        kills.append({"iteration": i, "at_s": round(at - started, 2),
                      "killed": [{k: v for k, v in info.items() if k != "key"} for _, info in victims],
                      "left_running": len(live), "done": len(done), "of": len(rows)})
    for proc, _ in live:
        proc.wait(timeout=300)
    time.sleep(0.1)
    final = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", cohort], env=_env(root, cfg),
                           capture_output=True, text=True, timeout=300)
    check = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", "--list"], env=_env(root, cfg),
                           capture_output=True, text=True, timeout=120)
    return {"seed": seed, "iterations": iterations, "kills": kills, "seconds": round(time.time() - started, 1),
            **_verify(root, paths, cohort, recorder, snapshots, final, check, torn, server)}


def _verify(root, paths, cohort, recorder, snapshots, final, check, torn, server) -> dict:
    import hashlib

    from pipeline.design.cohort import read_membership

    problems = list(torn)
    for (_, done, _, _), (_, later, _, _) in zip(snapshots, snapshots[1:]):
        problems += [f"{stage} {gen_id} was done, then not" for stage, gen_id in sorted(done - later)]
    if final.returncode != 0:
        problems.append(f"final run exited {final.returncode}: {final.stderr[-2000:]}")
    if check.returncode != 0:
        problems.append(f"daydream check exited {check.returncode}: {check.stdout[-2000:]}")
    rows = read_membership(paths, cohort)
    for r in rows:
        d = paths.gen_dir(r["stage"], r["gen_id"])
        try:
            pm = json.loads((d / "parsed_metadata.json").read_text())
            intact = pm.get("success") and hashlib.sha256((d / "parsed.txt").read_bytes()).hexdigest() == pm["parsed_sha256"]
        except (OSError, ValueError, KeyError):
            intact = False
        if not intact:
            problems.append(f"{r['stage']} {r['gen_id']} is not done")
    leftovers = [str(p.relative_to(root)) for p in root.rglob("*.tmp")] + \
                [str(p.relative_to(root)) for p in root.rglob("claim.json")]
    problems += [f"left behind: {p}" for p in leftovers]

    prompts = _prompts(paths, rows)
    by_prompt: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for key, prompt in prompts.items():
        by_prompt[prompt].append(key)
    ok_calls = collections.Counter(p for _, p, mode in recorder.began if mode == "ok")
    key_of = {id(r["body"]): r["headers"].get("authorization") for r in server.requests}
    calls = [(t, p, mode, key_of.get(id(body))) for (t, p, mode), body in zip(recorder.began, recorder.bodies)]
    # no call once done: after a kill at which every generation with this prompt was done (a
    # request of a run killed by then was made before, whenever the server read it)
    after_done, killed = 0, set()
    for seen, done, _, victims in snapshots:
        killed |= victims
        for prompt, keys in by_prompt.items():
            if all(k in done for k in keys):
                late = [t for t, p, _, key in calls if p == prompt and t > seen and key not in killed]
                if late:
                    after_done += len(late)
                    problems.append(f"{len(late)} call(s) for a prompt of {keys[0]} after it was done")
    flying: collections.Counter = collections.Counter()  # prompt -> calls in flight at the kills
    for _, _, done, victims in snapshots:
        made = collections.Counter(p for _, p, mode, key in calls if mode == "ok" and key in victims)
        for p, n in made.items():
            # one process at a time works on a generation: a kill loses at most one call of each
            # generation not done
            flying[p] += min(n, sum(1 for k in by_prompt.get(p, ()) if k not in done))
    in_flight = sum(flying.values())
    total_ok = sum(ok_calls.values())
    if total_ok > len(prompts) + in_flight:
        problems.append(f"{total_ok} successful calls for {len(prompts)} generations and {in_flight} in flight at the kills")
    extra = {p: n - len(by_prompt.get(p, ())) for p, n in ok_calls.items() if n > len(by_prompt.get(p, ()))}
    for p, n in extra.items():
        if n > flying[p]:
            problems.append(f"{n} repeated call(s) for a prompt of {by_prompt[p][0] if p in by_prompt else '?'}, "
                            f"{flying[p]} in flight at the kills")
    return {"generations": len(rows), "llm_generations": len(prompts), "requests": len(recorder.began),
            "faults": sum(1 for _, _, m in recorder.began if m != "ok"), "successful_calls": total_ok,
            "in_flight_at_kills": in_flight, "repeated_calls": sum(extra.values()), "calls_after_done": after_done,
            "torn": len(torn), "final_returncode": final.returncode, "check_returncode": check.returncode,
            "check": check.stdout.strip().splitlines()[:1], "problems": problems}
