"""Day-two operations on a data root edited by hand: check, status, invalidate, purge."""

from __future__ import annotations

import json

import pytest

from pipeline.ops.maintenance import check_store, invalidate, purge
from pipeline.run.running import cohort_status

from conftest import reset_luigi_state


def kinds(problems):
    return sorted({p.kind for p in problems})


def completions(server):
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def test_healthy_store_has_no_problems(project):
    assert project.run()
    problems, counts = check_store(project.paths)
    assert problems == [] and counts == {"checked": 21, "done": 21, "pending": 0}


def test_deleted_parsed_file_is_reported_and_reparsed_without_a_model_call(project):
    assert project.run()
    v = project.membership("evaluation")[0]["gen_id"]
    project.paths.gen_file("evaluation", v, "parsed.txt").unlink()
    problems, _ = check_store(project.paths, "t1")
    assert [(p.kind, p.gen_id) for p in problems] == [("missing_file", v)]
    project.server.reset()
    assert project.run()
    assert completions(project.server) == []  # the kept valid raw is parsed again
    assert check_store(project.paths, "t1")[0] == []


def test_corrupt_metadata_and_missing_parent_are_reported(project):
    assert project.run()
    e = next(r for r in project.membership("essay") if r["mode"] == "llm")
    project.paths.gen_file("essay", e["gen_id"], "parsed_metadata.json").write_text('{"success": tru')
    d = project.membership("draft")[1]["gen_id"]
    import shutil

    shutil.rmtree(project.paths.gen_dir("draft", d))
    problems, _ = check_store(project.paths)
    by_kind = {}
    for p in problems:
        by_kind.setdefault(p.kind, set()).add(p.gen_id)
    assert by_kind["corrupt_file"] == {e["gen_id"]}
    assert len(by_kind["broken_lineage"]) == 2  # both essays of the removed draft
    # the next run repairs: the draft is seeded again by compile and regenerated with its subtree
    project.server.reset()
    assert project.run()
    assert check_store(project.paths)[0] == []


def test_edited_template_makes_exactly_its_generations_stale(project):
    assert project.run()
    t = project.paths.template_file("evaluation", "v-nine")
    t.write_text(t.read_text() + "Be brief.\n")
    problems, _ = check_store(project.paths, "t1")
    assert {p.kind for p in problems} == {"stale"} and len(problems) == 6
    assert all("template 'v-nine' was edited" in p.detail for p in problems)
    project.server.reset()
    assert project.run()
    assert len(completions(project.server)) == 6


def test_regenerated_parent_makes_children_stale(project):
    assert project.run()
    essay = next(r for r in project.membership("essay") if r["mode"] == "llm")["gen_id"]
    invalidate(project.paths, gen_ids=[essay])  # removes the essay and its 2 evaluations' outputs
    base = project.server.responder
    project.server.responder = lambda b: base(b).replace("Essay paragraph", "New paragraph")
    from pipeline.run.executor import run_generation
    from pipeline.run.generation import runtime

    run_generation(runtime(), "essay", essay)
    problems, counts = check_store(project.paths, "t1")
    assert counts["pending"] == 2 and problems == []  # children were invalidated with the parent


def test_orphans_and_temporary_files(project):
    assert project.run()
    spec = project.root / "cohorts" / "t1" / "spec" / "config.yaml"
    spec.write_text(spec.read_text().replace("evaluation_template: [v-nine, v-ten]", "evaluation_template: [v-nine]"))
    from pipeline.design.cohort import compile_cohort

    compile_cohort(project.paths, "t1")
    d = project.membership("draft")[0]["gen_id"]
    (project.paths.gen_dir("draft", d) / ".raw.txt.abc123.tmp").write_text("partial")
    problems, _ = check_store(project.paths)
    assert sum(p.kind == "orphan" for p in problems) == 6
    assert [p.gen_id for p in problems if p.kind == "temporary_file"] == [d]
    # an orphan's metadata no longer lists the cohort
    orphan = next(p for p in problems if p.kind == "orphan")
    assert json.loads(project.read("evaluation", orphan.gen_id, "metadata.json"))["cohorts"] == []


def test_status_counts_failures_tokens_and_cost(project):
    base = project.server.responder
    project.server.responder = lambda b: "no number" if "0-10" in b["messages"][0]["content"] else base(b)
    assert not project.run()
    st = cohort_status("t1")
    assert st["stages"]["evaluation"]["done"] == 6 and st["stages"]["evaluation"]["failed"] == 6
    assert st["stages"]["draft"]["done"] == 3
    assert st["tokens"]["prompt"] > 0 and st["cost_usd"] > 0
    (reason, n), = [((s, r), n) for (s, r), n in st["reasons"].items()]
    assert n == 6 and reason[0] == "evaluation"


def test_invalidate_by_template_model_and_stage(project):
    assert project.run()
    removed = invalidate(project.paths, cohort_id="t1", template_id="v-ten", dry_run=True)
    assert len(removed) == 6 and all(s == "evaluation" for s, _ in removed)
    assert all(project.paths.gen_file(s, g, "parsed.txt").exists() for s, g in removed)  # dry run
    removed = invalidate(project.paths, cohort_id="t1", model_id="srv-a")  # drafts and llm essays
    assert sorted({s for s, _ in removed}) == ["draft", "essay", "evaluation"]
    assert len(removed) == 21  # every draft is srv-a: the whole cohort is downstream
    removed = invalidate(project.paths, cohort_id="t1", stage="evaluation")
    assert len(removed) == 12


def test_purge_keeps_generations_shared_with_other_cohorts(project):
    assert project.run()
    other = project.root / "cohorts" / "t2" / "spec"
    other.mkdir(parents=True)
    spec = (project.root / "cohorts" / "t1" / "spec" / "config.yaml").read_text()
    (other / "config.yaml").write_text(spec.replace("[v-nine, v-ten]", "[v-nine]"))
    from pipeline.design.cohort import compile_cohort

    compile_cohort(project.paths, "t2")
    dry = purge(project.paths, "t1")
    assert len(dry["removed"]) == 6 and len(dry["kept_shared"]) == 15
    assert all(project.paths.gen_dir(s, g).exists() for s, g in dry["removed"])
    done = purge(project.paths, "t1", dry_run=False)
    assert done == dry
    assert not any(project.paths.gen_dir(s, g).exists() for s, g in done["removed"])
    for s, g in done["kept_shared"]:
        assert json.loads(project.read(s, g, "metadata.json"))["cohorts"] == ["t2"]
    assert not project.paths.membership_csv("t1").exists()
    assert (project.root / "cohorts" / "t1" / "spec" / "config.yaml").exists()


def test_a_cohort_listing_the_same_concepts_in_another_order_shares_the_drafts_without_regenerating(project):
    """A combo is a set: a second cohort naming its concepts in another order gets the same drafts
    (same ids) and must leave them as the first cohort wrote them, or every run of either cohort
    would regenerate the shared drafts and make the other's essays and evaluations stale."""
    from pipeline.design.cohort import compile_cohort

    assert project.run()
    drafts = [r["gen_id"] for r in project.membership("draft")]
    before = {g: project.read("draft", g, "metadata.json") for g in drafts}
    other = project.root / "cohorts" / "t2" / "spec"
    other.mkdir(parents=True)
    spec = (project.root / "cohorts" / "t1" / "spec" / "config.yaml").read_text()
    (other / "config.yaml").write_text(spec.replace("[c-alpha, c-beta, c-gamma]", "[c-gamma, c-beta, c-alpha]"))
    compile_cohort(project.paths, "t2")
    for g in drafts:
        md, old = json.loads(project.read("draft", g, "metadata.json")), json.loads(before[g])
        assert md["combo"] == old["combo"] and md["cohorts"] == ["t1", "t2"]
    requests = len(project.server.requests)
    from pipeline.run.running import run_cohort

    for cohort in ("t2", "t1"):
        reset_luigi_state()
        assert run_cohort(cohort) == 0
    assert len(project.server.requests) == requests, "no generation is made again"
    problems, _ = check_store(project.paths)
    assert problems == []


def test_invalidate_names_the_other_cohorts_it_touches(tmp_path):
    """t1 and t2 share drafts and essays; their evaluations differ. Invalidating t1's essays
    reaches t2's evaluations too (descendants are found in the store): the command says so, and
    its dry run lists them without removing anything."""
    import os
    import subprocess
    import sys

    from datafactory import SPEC, make_data_root, write
    from pipeline.design.cohort import compile_cohort
    from pipeline.store import DataPaths

    root = make_data_root(tmp_path / "data", spec=SPEC.replace("[v-nine, v-ten]", "[v-nine]"), provider="offline")
    write(root / "cohorts" / "t2" / "spec" / "config.yaml", SPEC.replace("[v-nine, v-ten]", "[v-ten]"))
    paths = DataPaths(root)
    compile_cohort(paths, "t1")
    compile_cohort(paths, "t2")

    def daydream(*args):
        r = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, DAYDREAM_DATA_ROOT=str(root)))
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    out = daydream("invalidate", "--cohort", "t1", "--stage", "essay", "--dry-run")
    assert out[0] == "would invalidate 18 generations (with descendants): 6 essay, 12 evaluation"
    assert out[1] == "  in other cohorts too: t2 (6 essay, 6 evaluation)"  # t2's own evaluations among them
    out = daydream("invalidate", "--cohort", "t1", "--template", "v-nine", "--dry-run")
    assert out == ["would invalidate 6 generations (with descendants): 6 evaluation"]  # t1's alone
    out = daydream("invalidate", "--template", "v-ten")
    assert out == ["invalidated 6 generations (with descendants): 6 evaluation", "  in cohorts: t2 (6 evaluation)"]


def test_an_edit_in_place_of_the_same_size_is_seen_at_once(project):
    """Templates and concept descriptions are read again only when their stat changes
    (``catalog.authored_text``): an edit that keeps the file's size and inode, a moment after
    the last read, still makes the generations that render it stale."""
    assert project.run()
    t = project.paths.template_file("evaluation", "v-nine")
    before = t.read_text()
    assert check_store(project.paths, "t1")[0] == []  # read through the cache
    with open(t, "r+") as f:  # same inode, same size, only letters swapped
        f.write(before.swapcase())
    assert t.stat().st_size == len(before.encode())
    problems, _ = check_store(project.paths, "t1")
    assert {p.kind for p in problems} == {"stale"} and len(problems) == 6
    t.write_text(before)
    assert check_store(project.paths, "t1")[0] == []


def test_the_process_that_compiles_keeps_the_metadata_as_stored_and_reads_none_back(project, monkeypatch):
    """``compile_cohort(seeded=...)``, as the ``luigi`` command and ``daydream run`` compile: the
    runtime keeps every generation's metadata exactly as its file holds it, for a cohort
    compiled fresh and for one compiled next that shares generations with it (their ``cohorts``
    lists merged), and a recompile that writes nothing; none is read back afterwards."""
    from pipeline import config
    from pipeline.design.cohort import compile_cohort
    from pipeline.run import generation
    from pipeline.run.run_plan import membership
    from pipeline.store import read_json

    paths = config.data_paths()
    rt = generation.runtime()
    other = project.root / "cohorts" / "t2" / "spec"
    other.mkdir(parents=True)
    spec = (project.root / "cohorts" / "t1" / "spec" / "config.yaml").read_text()
    # the same combos named in another order: t1's order is what its drafts keep
    (other / "config.yaml").write_text(spec.replace("[c-alpha, c-beta, c-gamma]", "[c-gamma, c-beta, c-alpha]"))
    for cohort in ("t1", "t2", "t1"):
        rt._metadata.clear()
        written = compile_cohort(paths, cohort, seeded=rt.keep_metadata)[1]
        rows = membership(paths, cohort)
        assert len(rt._metadata) == len(rows)
        for r in rows:
            assert rt._metadata[(r["stage"], r["gen_id"])] == read_json(paths.gen_file(r["stage"], r["gen_id"], "metadata.json"))
    assert written["metadata"] == 0  # the last: nothing changed, all kept all the same
    shared = [r for r in rows if "t2" in rt._metadata[(r["stage"], r["gen_id"])]["cohorts"]]
    assert shared and all(rt._metadata[(r["stage"], r["gen_id"])]["cohorts"] == ["t1", "t2"] for r in shared)
    monkeypatch.setattr(generation, "read_json", lambda path: pytest.fail(f"read back: {path}"))
    assert all(generation.metadata(rt, r["stage"], r["gen_id"])["gen_id"] == r["gen_id"] for r in rows)


def test_a_concept_description_absent_at_a_level_is_not_opened_and_is_seen_once_written(project, monkeypatch):
    """``catalog.authored_text``: a description the concept lacks at a level falls back to the
    next level, after a stat and no open; written later, it is read at once, and gone again, it
    is not served from the cache."""
    from pipeline.design import catalog as catalog_module
    from pipeline.design.catalog import load_catalog

    cat = load_catalog(project.paths)
    cid = next(iter(cat.concepts))
    paragraph = project.paths.concept_description("paragraph", cid)
    sentence = project.paths.concept_description("sentence", cid)
    sentence.parent.mkdir(parents=True, exist_ok=True)
    sentence.write_text("One sentence about it.\n")
    if paragraph.exists():
        paragraph.unlink()
    opened = []
    real = catalog_module.read_text
    monkeypatch.setattr(catalog_module, "read_text", lambda path, **k: (opened.append(str(path)), real(path, **k))[1])
    assert cat.concept_text(cid, "paragraph") == "One sentence about it."
    assert str(paragraph) not in opened
    paragraph.parent.mkdir(parents=True, exist_ok=True)
    paragraph.write_text("A whole paragraph about it.\n")
    assert cat.concept_text(cid, "paragraph") == "A whole paragraph about it."
    paragraph.unlink()
    assert cat.concept_text(cid, "paragraph") == "One sentence about it."


def test_a_parent_just_generated_is_found_done_by_its_children_from_its_tokens_alone(project, monkeypatch):
    """``generation._remember``: a generation committed ``done`` in this process is classified
    by its children from its files' stat alone (none of its files read, its prompt not rendered
    again), and an edit of its template made afterwards still makes it, and them, stale."""
    from pipeline import config
    from pipeline.design.cohort import compile_cohort
    from pipeline.run import generation
    from pipeline.run.executor import executor, run_generation
    from pipeline.run.run_plan import membership
    from pipeline.store.state import DONE, PENDING, STALE
    from pipeline.tasks import run_stamp

    compile_cohort(config.data_paths(), "t1")
    rows = membership(config.data_paths(), "t1")
    essay = next(r for r in rows if r["stage"] == "essay" and r["mode"] == "llm")
    draft = essay["parent_gen_id"]
    rt = generation.runtime()
    assert run_generation(rt, "draft", draft, since=run_stamp()).kind == DONE
    assert executor(rt).rt is rt  # generated on a thread of this process, into its runtime
    read = []
    for name in ("read_text", "phase_json"):
        real = getattr(generation, name)
        monkeypatch.setattr(generation, name, lambda path, *a, _real=real, **k: (read.append(str(path)), _real(path, *a, **k))[1])
    assert generation.state_of(rt, "essay", essay["gen_id"]).kind == PENDING  # its parent done
    assert not [p for p in read if f"/{draft}/" in p], read
    template = project.paths.template_file("draft", rt.catalog.template("draft", generation.metadata(rt, "draft", draft)["template_id"]).id)
    template.write_text(template.read_text() + "One more line.\n")
    assert generation.state_of(rt, "draft", draft).kind == STALE
    assert generation.state_of(rt, "essay", essay["gen_id"]).kind == PENDING and read


def test_a_fresh_generation_looks_at_its_ancestors_once(project, monkeypatch):
    """A generation with no outcome recorded is not done, so ``generate`` takes its claim with no
    look first and walks its ancestors' files once, under the claim, and reads none of its own
    files that its absent outcome would vouch for (parsed output, outcome, a kept raw response);
    one already done is found done with no claim taken."""
    import asyncio

    from pipeline import config
    from pipeline.design.cohort import compile_cohort
    from pipeline.run import generation
    from pipeline.run.run_plan import membership
    from pipeline.store import claims
    from pipeline.store.state import DONE
    from pipeline.tasks import run_stamp

    compile_cohort(config.data_paths(), "t1")
    rows = membership(config.data_paths(), "t1")
    essay = next(r for r in rows if r["stage"] == "essay" and r["mode"] == "llm")
    draft = essay["parent_gen_id"]
    rt = generation.runtime()

    async def run(stage, gen_id):
        try:
            return await generation.generate(rt, stage, gen_id, since=run_stamp())
        finally:
            for p in rt.providers_here():
                await p.aclose()

    assert asyncio.run(run("draft", draft)).kind == DONE
    looked, read, acquired = [], [], []
    real_token, real_acquire = generation.file_token, claims.acquire
    real_json, real_text = generation.phase_json, generation.read_text
    monkeypatch.setattr(generation, "file_token", lambda path: (looked.append(str(path)), real_token(path))[1])
    monkeypatch.setattr(generation, "phase_json", lambda path: (read.append(str(path)), real_json(path))[1])
    monkeypatch.setattr(generation, "read_text", lambda path: (read.append(str(path)), real_text(path))[1])
    monkeypatch.setattr(claims, "acquire", lambda *a, **k: (acquired.append(a[0]), real_acquire(*a, **k))[1])
    assert asyncio.run(run("essay", essay["gen_id"])).kind == DONE
    assert looked.count(str(project.paths.gen_file("draft", draft, "parsed_metadata.json"))) == 1, looked

    def own(name):
        return str(project.paths.gen_file("essay", essay["gen_id"], name))

    assert looked.count(own("parsed.txt")) == 1, looked  # once, after its commit, to keep its state
    assert own("raw_metadata.json") in read  # a kept response would be reused
    assert not {own("parsed_metadata.json"), own("parsed.txt"), own("raw.txt")} & set(read), read
    assert len(acquired) == 1
    assert asyncio.run(run("essay", essay["gen_id"])).kind == DONE
    assert len(acquired) == 1  # done: no claim
