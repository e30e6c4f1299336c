"""The site's search index: every page's prose and every essay's whole texts, as JavaScript.

Browsers opened on a ``file://`` site refuse web workers and ``fetch`` of local files, which is
how MkDocs' search works. So the index is data in ``.js`` files that ``search.html`` loads with
``<script>`` tags (one per cohort, one for the site's own pages, so no single file grows with
the number of cohorts), and ``assets/daydream.js`` searches
it by plain substring matching. Pure: documents in, JavaScript text out.

A document is ``{"u": href from the site root, "t": title, "c": cohort id or "", "p": parts}``
where each part is ``[anchor, label, text]`` (an evaluation's part adds its score as a fourth
item): a hit names the part it was found in (the essay, its draft, one evaluation's reasoning,
the ids) and links to that part of the page. An essay's document adds ``"s"``, its rank and
mean score, which the results show.
"""

from __future__ import annotations

import json

from markupsafe import Markup

from pipeline.sitegen.render import interval, is_blank, num, score, script_json

SITE_FILE = "pages"   # search/pages.js: pages outside any cohort; a cohort's file is search/cohorts/<id>.js


def index_file(cohort_id: str | None) -> str:
    """Where a cohort's index (None: the site's own pages) goes, from the site root."""
    return f"search/{SITE_FILE}.js" if cohort_id is None else f"search/cohorts/{cohort_id}.js"


def _plain(v) -> str:
    """Text of a page fragment: markup dropped, whitespace collapsed."""
    if v is None:
        return ""
    text = Markup(v).striptags() if isinstance(v, Markup) else str(v)
    return " ".join(text.split())


def page_doc(path: str, title: str, heading: str, lead, sections) -> dict:
    """A generated page as a document: its heading, lead and each section's title and prose.
    Tables are left out: their rows are in the essays' documents and the CSV downloads, and a
    hit in a 500-row table says nothing about where to look."""
    parts = [["", heading, _plain(lead)]]
    for s in sections:
        text = _plain(s.text)
        if s.title or text:
            parts.append(["", _plain(s.title) or heading, text])
    return {"u": path[: -len(".md")] + ".html", "t": title, "c": cohort_of(path), "p": parts}


def cohort_of(path: str) -> str:
    bits = path.split("/")
    return bits[1] if len(bits) > 2 and bits[0] == "cohorts" else ""


def _eval_score(v: dict) -> str:
    """An evaluation's outcome as a result shows it: its score on the rubric's scale, or why none."""
    if v.get("status") == "done" and v.get("score") is not None:
        norm = v.get("score_norm")
        return f"score {score(v['score'])} on {v.get('scale') or '?'}" + (f" (score_norm {num(norm)})" if norm is not None else "")
    if v.get("status") == "failed":
        return f"failed: {v.get('error') or 'unknown'}"
    return str(v.get("status") or "unknown")


def essay_doc(cohort_id: str, e: dict, d: dict | None, evals: list[dict], combo: dict | None,
              summary: str = "") -> dict:
    """An essay page as a document: the whole essay, its draft, every evaluation's reasoning (or
    failure) with its score, the concepts' names and texts, and every id and name of its lineage.
    ``summary``: the essay's rank and mean, shown with each result."""
    eid = str(e["gen_id"])
    parts = [["essay", "essay", e.get("text") or e.get("text_problem") or ""]]
    if d:
        parts.append(["draft", "draft", d.get("text") or d.get("text_problem") or ""])
    for v in evals:
        what = " ".join(x for x in (v.get("text") or v.get("text_problem") or "", str(v.get("error_detail") or "")) if x)
        parts.append([str(v["gen_id"]), f"evaluation: {v['template_name']} by {v['model_name']}, replicate "
                      f"{v['replicate']}", what, _eval_score(v)])
    if combo:
        parts.append(["concepts", "concepts", " ".join(f"{c['name']} ({c['id']}): {c['text']}" for c in combo["concepts"])])
    ids = [eid, str(e.get("parent_gen_id") or ""), str(e.get("combo_id") or "")]
    names = [e.get("template_name"), e.get("template_id"), e.get("model_name"), e.get("llm_model_id")]
    if d:
        names += [d.get("template_name"), d.get("template_id"), d.get("model_name"), d.get("llm_model_id")]
    for v in evals:
        ids.append(str(v["gen_id"]))
        names += [v.get("template_name"), v.get("template_id"), v.get("model_name"), v.get("llm_model_id")]
    lineage = " ".join(dict.fromkeys(str(x) for x in ids + names if x not in (None, "")))
    parts.append(["lineage", "ids and names", lineage])
    for p in parts:
        p[2] = " ".join(str(p[2]).split())
    doc = {"u": f"cohorts/{cohort_id}/essays/{eid}.html", "t": f"{cohort_id}: essay {eid}", "c": cohort_id,
           "p": [p for p in parts if p[2]]}
    if summary:
        doc["s"] = summary
    return doc


def essay_summary(lb_row: dict, n_ranked: int) -> str:
    """An essay's standing for a search result: rank, mean score_norm with its interval and n."""
    rank, mean = lb_row.get("rank"), lb_row.get("mean")
    if is_blank(mean):
        return "not scored yet"
    where = f"rank {num(rank)} of {n_ranked:,} · " if not is_blank(rank) else ""
    ci = interval(lb_row.get("ci_low"), lb_row.get("ci_high"))
    return f"{where}mean score_norm {num(mean)}" + (f" {ci}" if ci else "") + f", n={num(lb_row.get('n_cells')) or 0} cells"


def index_script(docs: list[dict]) -> str:
    """A script adding ``docs`` to ``window.DDSEARCH``; safe whatever the texts hold."""
    data = script_json(json.dumps(docs, ensure_ascii=False, separators=(",", ":")))
    return f"window.DDSEARCH=(window.DDSEARCH||[]).concat({data});\n"


def search_ui(index_files: list[str]) -> Markup:
    """The search page's form, result list and the index scripts (``index_files``, from the root)."""
    scripts = Markup("").join(Markup('<script src="{}"></script>\n').format(n) for n in index_files)
    return Markup(
        '<form class="dd-search-form" action="search.html" method="get" role="search">\n'
        '<input type="search" name="q" id="dd-search-q" placeholder="Words, ids (e_…), concepts, reasoning" '
        'aria-label="Search the reports" autocomplete="off">\n<button type="submit">Search</button>\n</form>\n'
        '<p id="dd-search-status" class="dd-meta" role="status">Type words to search every essay, draft, '
        "evaluation and page. Every word must occur (in any order).</p>\n"
        '<ol id="dd-search-results" class="dd-search-results"></ol>\n{}').format(scripts)
