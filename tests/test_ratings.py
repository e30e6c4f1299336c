"""`daydream ratings import`: a rater's CSV (as the site's blind rating mode exports it) becomes
evaluations by human:NAME in the store, deterministic, done for the one state classifier, and
seen by the reports beside the LLM judges. The browser half (rate, export, import, rebuild, see)
is in test_site_ratings_browser.py."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

from pipeline import cli
from pipeline.run import generation
from pipeline.ids import evaluation_gen_id
from pipeline.reports import build_reports
from pipeline.store import read_json
from pipeline.ops.synthetic import make_synthetic_cohort


DONE_ESSAYS: list[str] = []   # the fixture's done essays, as its reports list them


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One store for the module: the bad files write nothing, the good one only adds."""
    import os

    paths = make_synthetic_cohort(tmp_path_factory.mktemp("ratings") / "data", "alpha", n_essays=8,
                                  include_hostile=False)
    old = os.environ.get("DAYDREAM_DATA_ROOT")
    os.environ["DAYDREAM_DATA_ROOT"] = str(paths.root)
    generation.forget_runtimes()
    out = build_reports(paths, "alpha")
    g = out["generations"]
    DONE_ESSAYS[:] = g[(g["stage"] == "essay") & (g["status"] == "done")]["gen_id"].tolist()
    yield paths
    generation.forget_runtimes()
    if old is None:
        os.environ.pop("DAYDREAM_DATA_ROOT", None)
    else:
        os.environ["DAYDREAM_DATA_ROOT"] = old


def _done_essays(paths, cohort="alpha") -> list[str]:
    return list(DONE_ESSAYS)


def _csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["cohort_id", "essay_gen_id", "rubric", "score", "note", "rated_at"])
    w.writerows(rows)
    return buf.getvalue()


def test_import_adds_human_evaluations_the_reports_show(root, tmp_path, capsys):
    essays = _done_essays(root)[:4]
    rows = [["alpha", e, "novelty-v1", str(i + 3), f"note {i}, with a comma", "2026-12-01T10:00:00Z"]
            for i, e in enumerate(essays)] + [["alpha", essays[0], "rigor-v1", "7.5", "", ""]]
    f = tmp_path / "ratings.csv"
    f.write_text(_csv(rows))
    assert cli.main(["ratings", "import", str(f), "--rater", "alice"]) == 0
    assert "imported 5 ratings by human:alice into alpha" in capsys.readouterr().out
    rt = generation.runtime()
    for i, e in enumerate(essays):
        gid = evaluation_gen_id(e, "novelty-v1", "human:alice", 1)
        pm = read_json(root.gen_file("evaluation", gid, "parsed_metadata.json"))
        # what the one classifier compares (the synthetic store's drafts carry no combo for a full walk)
        inputs = generation.resolve_inputs(rt, "evaluation", gid)
        assert pm["input_fingerprint"] == inputs.fingerprint and pm["success"] is True
        assert pm["score"] == i + 3 and pm["scale_min"] == 0 and pm["scale_max"] == 9 and pm["simulated"] is False
        assert f"note {i}, with a comma" in root.gen_file("evaluation", gid, "raw.txt").read_text()
        assert read_json(root.gen_file("evaluation", gid, "raw_metadata.json"))["cost_usd"] is None
    out = build_reports(root, "alpha")
    s = out["scores"]
    human = s[s["evaluation_llm"] == "human:alice"]
    assert len(human) == 5 and set(human["status"]) == {"done"}
    assert sorted(human["score"].tolist()) == [3, 4, 5, 6, 7.5]
    assert "human:alice" in set(pd.read_csv(root.reports_dir("alpha") / "paired_comparisons.csv")["level_a"]) | \
        set(pd.read_csv(root.reports_dir("alpha") / "paired_comparisons.csv")["level_b"]), \
        "paired differences against each LLM judge"
    # again: the same ids, replaced, not added
    f.write_text(_csv([["alpha", essays[0], "novelty-v1", "9", "changed my mind", ""]]))
    assert cli.main(["ratings", "import", str(f), "--rater", "alice"]) == 0
    s = build_reports(root, "alpha")["scores"]
    human = s[s["evaluation_llm"] == "human:alice"]
    assert len(human) == 5 and 9 in human["score"].tolist()
    # compiling the cohort again keeps them (membership.csv is rewritten from the spec)
    assert (root.cohort_dir("alpha") / "ratings.csv").read_text().count("human:alice") == 5
    # and they are the cohort's: never orphans for `purge --orphans` to remove
    from pipeline.ops.maintenance import find_orphans

    human_ids = {evaluation_gen_id(e, "novelty-v1", "human:alice", 1) for e in essays}
    assert not human_ids & {gid for _, gid in find_orphans(root)}


@pytest.mark.parametrize("row, rater, needle", [
    (["alpha", "e_nope", "novelty-v1", "3", "", ""], "bob", "is not in cohort 'alpha'"),
    (["alpha", "ESSAY", "novelty-v1", "12", "", ""], "bob", "outside rubric 'novelty-v1'"),
    (["alpha", "ESSAY", "novelty-v1", "high", "", ""], "bob", "line 3: score 'high' is not a number"),
    (["alpha", "ESSAY", "no-such-rubric", "3", "", ""], "bob", "unknown evaluation template 'no-such-rubric'"),
    (["alpha", "ESSAY", "novelty-v1", "3", "", ""], "bob smith", "--rater 'bob smith'"),
])
def test_a_bad_ratings_file_is_one_error_and_writes_nothing(root, tmp_path, capsys, row, rater, needle):
    essay = _done_essays(root)[0]
    f = tmp_path / "bad.csv"
    f.write_text(_csv([["alpha", essay, "novelty-v1", "4", "", ""], [x.replace("ESSAY", essay) for x in row]]))
    listed = root.cohort_dir("alpha") / "ratings.csv"
    before = sorted(p.name for p in (root.gens / "evaluation").iterdir()), listed.read_text() if listed.exists() else None
    assert cli.main(["ratings", "import", str(f), "--rater", rater]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error[") and needle in err and "Traceback" not in err and err.count("\n") == 1
    after = sorted(p.name for p in (root.gens / "evaluation").iterdir()), listed.read_text() if listed.exists() else None
    assert after == before, "a bad file writes nothing, not even its good rows"
