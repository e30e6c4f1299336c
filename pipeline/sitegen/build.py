"""Build the report site: report tables → Markdown pages → ``mkdocs build`` → filled pages.

MkDocs supplies the theme and navigation; it never sees data. Each page part (table,
chart, key numbers) reaches MkDocs as a *slot* token in a paragraph of its own, and its HTML is
put in its place in the built file afterwards. So nothing from a model or a catalog passes
through Markdown (escaping is Jinja/markupsafe's alone), and MkDocs only handles small pages: its
Markdown parser costs seconds on the megabytes of HTML a big cohort's tables make.

Essay pages are not MkDocs pages at all: a cohort has thousands of essays, and MkDocs would
render each through Markdown and the theme. MkDocs renders one *shell* page per cohort (the theme
around a slot) and each essay's HTML, rendered by Jinja, goes into a copy of the shell.

Search is ours, not MkDocs' plugin (whose web worker browsers refuse on a site opened from
files): ``search.py`` turns every page's prose and every essay's whole texts into
``search/*.js`` scripts that ``search.html`` loads.

One builder at a time: a build holds an exclusive lock on ``site/build.lock`` (a POSIX record
lock, which NFS honours) from the first page written to the swap, so two runs that finish
together build one after the other instead of into each other's files. The site is built into
``build.tmp``, renamed to a version of its own (``build-<id>``), and ``site/build`` (a symlink
to the current version) is replaced by one to the new version in one ``rename``: a reader or a
running preview server sees the old site or the new one, never none, and a failed build leaves
the old one in place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from markupsafe import escape

from pipeline.errors import DaydreamError
from pipeline.ids import is_safe_id
from pipeline.store import DataPaths, atomic_write_bytes, atomic_write_text, check_id, exclusive_lock, read_json, read_text
from pipeline.sitegen import pages as P
from pipeline.reports.search import SEARCH_TABLES
from pipeline.sitegen.data import Names, cohorts_with_reports, load_cohort_tables, load_cross_cohort, read_table, records
from pipeline.sitegen import search as S
from pipeline.sitegen.diff import side_by_side
from pipeline.sitegen.gens import EssayBundle, failure_files, load_essays
from pipeline.sitegen.render import Col, interval, make_env, num, score, script_json, status_tag, table

SITE_PROJECT = Path(__file__).resolve().parents[2] / "site"   # the MkDocs project in the repo
TITLE_SLOT, BODY_SLOT = "DDESSAYTITLESLOT", "<p>DDESSAYBODYSLOT</p>"
SLOT = re.compile(r"DDSLOT\d+X")
SHELL = "_essay"


def mkdocs_yml() -> Path:
    path = SITE_PROJECT / "mkdocs.yml"
    if not path.is_file():
        raise DaydreamError("site", "the MkDocs project (site/mkdocs.yml) is not next to the pipeline package; "
                            "install the repository with `pip install -e .`", path=path)
    return path


def _plotly_js() -> bytes:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DaydreamError("site", f"plotly.min.js not found in the plotly package: {exc}", path=path) from None


# ---------------------------------------------------------------------------------------------
# Essay pages


def _shown(c: P.Cohort, g) -> dict | None:
    """A generation's report row plus its display names, text and prompt, as the essay template
    uses it."""
    if g is None:
        return None
    r = dict(g.row, text=g.text, text_problem=g.text_problem, prompt=g.prompt,
             template_name=c.names.template(g.row["stage"], g.row["template_id"]),
             model_name=c.names.model(g.row["llm_model_id"]))
    if g.row["stage"] == "evaluation":
        s = g.score
        r.update(score=s.get("score"), score_norm=s.get("score_norm"),
                 scale=f"{score(s.get('scale_min'))}–{score(s.get('scale_max'))}" if s else "")
    return r


def _compares(e: dict, d: dict | None, siblings: list[dict], evals: list[dict]) -> list[dict]:
    """The side-by-side comparisons an essay page offers: its draft (the essay is a revision of
    it, or a copy), the other essays of the same draft, and replicates of one evaluation."""
    out = []
    if d and d.get("text") is not None and e.get("text") is not None:
        out.append({"id": "compare-draft", "title": "Draft → this essay", "html": side_by_side(
            d["text"], e["text"], f"draft {d['gen_id']}", f"essay {e['gen_id']}")})
    for s in siblings:
        if s.get("text") is not None and e.get("text") is not None:
            out.append({"id": f"compare-{s['gen_id']}", "title": f"This essay ↔ {s['template_name']} by {s['model_name']} "
                        "(same draft)", "html": side_by_side(e["text"], s["text"], f"essay {e['gen_id']} (this one)",
                                                             f"essay {s['gen_id']}")})
    groups: dict[tuple, list[dict]] = {}
    for v in evals:
        if v.get("text") is not None:
            groups.setdefault((v["template_id"], v["llm_model_id"]), []).append(v)
    for vs in groups.values():
        if len(vs) >= 2:
            a, b = vs[0], vs[1]
            out.append({"id": f"compare-{a['gen_id']}", "title": f"{a['template_name']} by {a['model_name']}: replicate "
                        f"{a['replicate']} ↔ replicate {b['replicate']}", "html": side_by_side(
                            a["text"], b["text"], f"replicate {a['replicate']} ({a['gen_id']})",
                            f"replicate {b['replicate']} ({b['gen_id']})")})
    by_rubric: dict[str, list[dict]] = {}
    for (rubric, _), vs in groups.items():
        by_rubric.setdefault(rubric, []).append(vs[0])
    for vs in by_rubric.values():
        if len(vs) >= 2:   # two evaluators' reasoning on one rubric (their first replicates)
            a, b = vs[0], vs[1]
            out.append({"id": f"compare-{a['gen_id']}-{b['gen_id']}", "title": f"{a['template_name']}: "
                        f"{a['model_name']} ↔ {b['model_name']}", "html": side_by_side(
                            a["text"], b["text"], f"{a['model_name']} ({a['gen_id']})", f"{b['model_name']} ({b['gen_id']})")})
    return out


USAGE_COLS = [Col("prompt_tokens", kind="int"), Col("completion_tokens", kind="int"), Col("cost_usd", kind="usd")]


def _essay_context(c: P.Cohort, b: EssayBundle, lb_row: dict, n_ranked: int, siblings: list) -> dict:
    evals = [_shown(c, v) for v in b.evaluations]
    rows = [dict(v, gen=P.Link(v["gen_id"], f"#{v['gen_id']}", code=True), status_html=status_tag(v["status"], v["error"]))
            for v in evals]
    scores_table = table([Col("template_name", "evaluation_template"), Col("model_name", "evaluation_llm"),
                          Col("replicate"), Col("score", kind="score"), Col("scale"), Col("score_norm", kind="num"),
                          Col("status_html", "status"), Col("gen", "evaluation_gen_id"), *USAGE_COLS], rows,
                         empty="No evaluations of this essay in this cohort.", tid="scores")
    rank = lb_row.get("rank")
    cards = P.cards([("rank", f"{num(rank)} of {n_ranked:,}" if rank is not None else "unranked"),
             ("mean score_norm", num(lb_row.get("mean")) or "–"),
             ("95% CI (cells)", interval(lb_row.get("ci_low"), lb_row.get("ci_high")) or "–"),
             ("scored / expected evaluations", f"{num(lb_row.get('n')) or 0} / {num(lb_row.get('expected')) or 0}"),
             ("std", num(lb_row.get("std")) or "–")])
    e, d = _shown(c, b.essay), _shown(c, b.draft)
    rubrics = []
    for v in evals:
        if v["template_id"] not in {r["id"] for r in rubrics}:
            rubrics.append({"id": v["template_id"], "name": v["template_name"], "scale": v["scale"],
                            "text": c.names.template_text("evaluation", v["template_id"])})
    sib = [_shown(c, s) for s in siblings]
    return {"e": e, "d": d, "evals": evals, "simulated": b.simulated, "rubrics": rubrics,
            "combo": c.names.combo(b.essay.row["combo_id"]), "cards": cards, "scores_table": scores_table,
            "compares": _compares(e, d, sib, evals)}


def rank_order(bundles: list[EssayBundle], lb: dict[str, dict]) -> list[EssayBundle]:
    """Essays in the leaderboard's order (the order an essay page's "rank 3 of 12" and its
    previous / next links follow; ``lb`` is keyed by essay in the leaderboard's row order, so
    essays tied on rank come as the leaderboard lists them); unranked essays after them, in
    cohort order."""
    row = {eid: n for n, eid in enumerate(lb)}

    def key(ib):
        i, b = ib
        eid = b.essay.row["gen_id"]
        rank = lb.get(eid, {}).get("rank")
        return (0, float(rank), row[eid], i) if rank is not None and not P.is_blank(rank) else (1, 0.0, 0, i)
    return [b for _, b in sorted(enumerate(bundles), key=key)]


def essay_crumbs(cohort_id: str, title: str) -> str:
    """The breadcrumb of an essay page: an essay page is not in the nav, so the theme would show
    only its title; it belongs under its cohort's essays."""
    cid = escape(cohort_id)
    return ('<li class="breadcrumb-item">Cohorts</li>'
            f'<li class="breadcrumb-item"><a href="../index.html">{cid}</a></li>'
            '<li class="breadcrumb-item"><a href="index.html">Essays</a></li>'
            f'<li class="breadcrumb-item active">{title}</li>')


def _jv(v):
    """A value for the browser's JSON: None for missing, plain numbers and strings."""
    if P.is_blank(v):
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return int(v) if float(v).is_integer() and abs(v) < 2 ** 53 else float(v)
    try:
        import numpy as np
        if isinstance(v, np.generic):
            return _jv(v.item())
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def essay_data(cohort_id: str, ctx: dict, lb_row: dict, n_ranked: int) -> dict:
    """What the compare page shows of one essay (``essays/<id>.js``): texts, prompts, lineage,
    standing and every evaluation with its score and reasoning."""
    def gen(g):
        if not g:
            return None
        return {k: _jv(g.get(k)) for k in ("gen_id", "template_id", "template_name", "llm_model_id", "model_name",
                                            "mode", "replicate", "status", "error", "text", "prompt", "text_problem")}
    evals = [dict({k: _jv(v.get(k)) for k in ("gen_id", "template_id", "template_name", "llm_model_id", "model_name",
                                               "replicate", "status", "error", "error_detail", "score", "score_norm",
                                               "scale", "text", "text_problem")}) for v in ctx["evals"]]
    combo = ctx["combo"]
    return {"id": str(ctx["e"]["gen_id"]), "cohort": cohort_id, "combo_id": _jv(ctx["e"].get("combo_id")),
            "concepts": [{"id": c["id"], "name": c["name"]} for c in combo["concepts"]] if combo else None,
            "rank": _jv(lb_row.get("rank")), "n_ranked": n_ranked, "mean": _jv(lb_row.get("mean")),
            "ci_low": _jv(lb_row.get("ci_low")), "ci_high": _jv(lb_row.get("ci_high")),
            "n_cells": _jv(lb_row.get("n_cells")), "essay": gen(ctx["e"]), "draft": gen(ctx["d"]), "evals": evals,
            "simulated": bool(ctx["simulated"])}


def essay_script(data: dict) -> str:
    """``essays/<id>.js``: adds one essay's data to ``window.DDESSAY`` (a script, not JSON to
    fetch, so the compare page works opened from files)."""
    blob = script_json(json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
    return f"window.DDESSAY=window.DDESSAY||{{}};window.DDESSAY[{json.dumps(data['id'])}]={blob};\n"


def _write_essays(c: P.Cohort, bundles: list[EssayBundle], build: Path, env, others: dict[str, list[str]]) -> list[dict]:
    """Write every essay page of ``c`` from its cohort's shell; returns their search documents.
    ``others`` maps an essay to the other cohorts that have a page for it."""
    essays_dir = build / "cohorts" / c.id / "essays"
    shell_path = essays_dir / f"{SHELL}.html"
    shell = read_text(shell_path)
    if shell is None or shell.count(BODY_SLOT) != 1:
        raise DaydreamError("site", "the essay shell page did not render as expected (theme changed?)", path=shell_path)
    head, tail = shell.split(BODY_SLOT)
    crumb = f'<li class="breadcrumb-item active">{TITLE_SLOT}</li>'
    if head.count(crumb) != 1:
        raise DaydreamError("site", "the essay shell's breadcrumb did not render as expected (theme changed?)",
                            path=shell_path)
    head = head.replace(crumb, essay_crumbs(c.id, TITLE_SLOT))
    tpl = env.get_template("essay.html")
    lb = {r["essay_gen_id"]: r for r in records(c.t["leaderboard"])}
    n_ranked = int(c.t["leaderboard"]["rank"].notna().sum()) if len(c.t["leaderboard"]) else 0
    bundles = rank_order(bundles, lb)
    ids = [b.essay.row["gen_id"] for b in bundles]
    by_draft: dict[str, list] = {}
    for b in bundles:
        by_draft.setdefault(str(b.essay.row["parent_gen_id"]), []).append(b.essay)
    docs = []
    for i, b in enumerate(bundles):
        eid = ids[i]
        siblings = [s for s in by_draft.get(str(b.essay.row["parent_gen_id"]), []) if s is not b.essay]
        ctx = _essay_context(c, b, lb.get(eid, {}), n_ranked, siblings)
        ctx.update(index_href="index.html",
                   prev_href=f"{ids[i - 1]}.html" if i > 0 else "", next_href=f"{ids[i + 1]}.html" if i + 1 < len(ids) else "",
                   others=[{"cohort": o, "href": f"../../{o}/essays/{eid}.html"} for o in others.get(eid, []) if o != c.id])
        body = tpl.render(ctx)
        title = str(escape(f"{c.id}: essay {eid}"))
        page = (head.replace(TITLE_SLOT, title).replace(f"{SHELL}.md", f"{eid}.html").replace(f"{SHELL}.html", f"{eid}.html")
                + body + tail.replace(TITLE_SLOT, title))
        atomic_write_text(essays_dir / f"{eid}.html", page)
        atomic_write_text(essays_dir / f"{eid}.js", essay_script(essay_data(c.id, ctx, lb.get(eid, {}), n_ranked)))
        docs.append(S.essay_doc(c.id, ctx["e"], ctx["d"], ctx["evals"], ctx["combo"],
                                S.essay_summary(lb.get(eid, {}), n_ranked)))
    shell_path.unlink()
    return docs


def _slot_parts(page: P.Page, slots: dict[str, str]) -> None:
    """Replace each part of ``page`` by a slot token, keeping its HTML in ``slots``."""
    for section in page.sections:
        tokens = []
        for part in section.parts:
            token = f"DDSLOT{len(slots)}X"
            slots[token] = str(part)
            tokens.append(token)
        section.parts = tokens


def _fill_slots(build: Path, page: P.Page, slots: dict[str, str]) -> None:
    """Put the HTML of every slot of ``page`` into its built file."""
    path = build / (page.path[: -len(".md")] + ".html")
    html = read_text(path) or ""
    pieces = re.split(r"<p>(DDSLOT\d+X)</p>", html)
    tokens = pieces[1::2]
    if set(tokens) != set(SLOT.findall(html)) or len(tokens) != len(set(tokens)):
        raise DaydreamError("site", "a slot of a generated page did not render as a paragraph", path=path)
    pieces[1::2] = [slots[t] for t in tokens]
    atomic_write_text(path, "".join(pieces))


# ---------------------------------------------------------------------------------------------
# The build


def _pageable(bundles: list[EssayBundle]) -> list[EssayBundle]:
    """Essays that can have a page: a safe gen_id (it names the file), listed once."""
    seen: set[str] = set()
    out = []
    for b in bundles:
        eid = str(b.essay.row["gen_id"])
        if is_safe_id(eid) and eid != "unknown" and eid not in seen:
            seen.add(eid)
            out.append(b)
    return out


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _mkdocs(docs: Path, out: Path, nav: list, simulated: bool) -> None:
    """Run MkDocs (strict: any warning is an error) with our generated docs and nav."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import MkDocsException

    log = logging.getLogger("mkdocs")
    handler, level = _Warnings(), log.level
    log.addHandler(handler)
    log.setLevel(logging.WARNING)  # MkDocs' INFO lines ("Building documentation ...") are noise here
    try:
        cfg = load_config(config_file=str(mkdocs_yml()), docs_dir=str(docs), site_dir=str(out), nav=nav,
                          extra={"daydream_simulated": simulated})
        cfg.plugins.on_startup(command="build", dirty=False)
        try:
            build(cfg)
        finally:
            cfg.plugins.on_shutdown()
    except (MkDocsException, SystemExit) as exc:
        detail = "; ".join(handler.messages[-5:]) or str(exc)
        raise DaydreamError("site", f"mkdocs build failed: {detail}") from None
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _sync_dir(root: Path, files: dict[str, bytes]) -> None:
    """Make ``root`` hold exactly ``files``: write each (atomically, skipped when unchanged), then
    delete anything else, so no page of a removed cohort or essay survives."""
    for rel, data in files.items():
        atomic_write_bytes(root / rel, data)
    for p in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = p.relative_to(root).as_posix()
        if p.is_dir():
            if not any(p.iterdir()):
                p.rmdir()
        elif rel not in files:
            p.unlink()


def _nav(cohorts: list[P.Cohort]) -> list:
    """Site pages first, then one folded section per cohort (the theme opens only the current
    one), so ten cohorts are ten lines, not eighty."""
    nav: list = [{"All cohorts": "index.md"}, {"Cross-cohort": "cross-cohort.md"}, {"Search": "search.md"}]
    if cohorts:
        nav.append({"Cohorts": [{c.id: [{title: f"cohorts/{c.id}/{stem}.md"} for stem, title in c.pages]}
                                for c in cohorts]})
    return nav


_ROOT_ABSOLUTE = re.compile(r"""((?:href|src)=["'])/(?!/)""")


def relative_404(html: str) -> str:
    """MkDocs writes 404.html with root-absolute links (a server may show it at any depth); the
    site is opened from files or any sub-path, so make them relative to the site root, where
    404.html is."""
    html = _ROOT_ABSOLUTE.sub(r"\1", html)
    return html.replace('var base_url = "/";', 'var base_url = ".";')


# A build under way elsewhere is waited for at most this long: a larger site builds in minutes,
# a holder past this is stuck and the waiter says so rather than hang.
BUILD_WAIT_S = 3600.0


@contextlib.contextmanager
def _one_builder(site: Path):
    """Hold the site's build lock (waits for a build under way elsewhere, at most ``BUILD_WAIT_S``)."""
    with exclusive_lock(os.fspath(site / "build.lock"), BUILD_WAIT_S, "the site's build lock"):
        yield


def _swap_in(site: Path, tmp: Path) -> Path:
    """Make the built ``tmp`` the site: renamed to a version of its own, then ``site/build``
    pointed at it in one ``rename``; older versions are removed."""
    out = site / "build"
    version = f"build-{uuid.uuid4().hex[:12]}"
    tmp.rename(site / version)
    link = site / "build.link.tmp"
    link.unlink(missing_ok=True)
    os.symlink(version, link)
    if out.is_dir() and not out.is_symlink():  # a site built before versions: moved aside once
        shutil.rmtree(site / "build.old", ignore_errors=True)
        out.rename(site / "build.old")
    os.replace(link, out)
    for old in site.glob("build-*"):
        if old.name != version:
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(site / "build.old", ignore_errors=True)
    return out


def build_site(paths: DataPaths, cohort_ids: list[str] | None = None) -> Path:
    """Render the pages of ``cohort_ids`` (None: every cohort with reports) and build the site.

    Returns the built site's directory (``paths.site_dir / "build"``, holding ``index.html``).
    Raises ``DaydreamError("site")`` when a cohort has no reports or MkDocs fails. One build at
    a time per data root (see the module's docstring).
    """
    with _one_builder(paths.site_dir):
        return _build_site(paths, cohort_ids)


def _build_site(paths: DataPaths, cohort_ids: list[str] | None) -> Path:
    ids = cohorts_with_reports(paths) if cohort_ids is None else [check_id(c, "cohort id") for c in cohort_ids]
    if len(set(ids)) != len(ids):
        raise DaydreamError("site", f"cohort ids listed more than once: {', '.join(ids)}")
    names = Names.load(paths)
    env = make_env()
    cohorts: list[P.Cohort] = []
    bundles: dict[str, list[EssayBundle]] = {}
    for cid in ids:
        try:
            names.add_manifest_combos(read_json(paths.manifest_json(cid)))
        except DaydreamError:
            pass  # a corrupt manifest only costs concept names (the reports list it as an issue)
        tables = load_cohort_tables(paths, cid)
        bundles[cid] = _pageable(load_essays(paths, tables["generations"], tables["scores"], tables["leaderboard"]))
        search = {n: df for n in SEARCH_TABLES if (df := read_table(paths.reports_dir(cid) / f"{n}.csv")) is not None}
        cohorts.append(P.Cohort(cid, tables, names, {b.essay.row["gen_id"] for b in bundles[cid]},
                                search if len(search) == len(SEARCH_TABLES) else {}))
    in_cohorts: dict[str, list[str]] = {}
    for c in cohorts:
        for eid in sorted(c.essay_ids):
            in_cohorts.setdefault(eid, []).append(c.id)

    files: dict[str, bytes] = {}
    cross = load_cross_cohort(paths)
    simulated = any(c.simulated for c in cohorts)
    pages = [P.home(cohorts), P.cross_cohort(cross, cohorts, names),
             P.search_page([S.index_file(None)] + [S.index_file(c.id) for c in cohorts], simulated)]
    for c in cohorts:
        pages += P.cohort_pages(c)
        rows, tails, published = P.failure_rows(c), {}, {}
        for r in rows:
            gfiles, tails[r["gen_id"]] = failure_files(paths, r["stage"], r["gen_id"])
            published[r["gen_id"]] = list(gfiles)
            for name, data in gfiles.items():
                files[f"cohorts/{c.id}/files/{r['stage']}/{r['gen_id']}/{name}"] = data
        pages.append(P.failures(c, rows, tails, published))
    slots: dict[str, str] = {}
    page_tpl = env.get_template("_page.md")
    site_docs, cohort_docs = [], {c.id: [] for c in cohorts}
    for p in pages:
        doc = S.page_doc(p.path, p.title, p.heading, p.lead, p.sections)
        if p.path != "search.md":
            (cohort_docs[doc["c"]] if doc["c"] in cohort_docs else site_docs).append(doc)
        charts = p.charts
        _slot_parts(p, slots)
        files[p.path] = page_tpl.render(
            title=str(escape(p.title)), heading=p.heading, lead=p.lead, sections=p.sections, simulated=p.simulated,
            root=p.root, charts=charts).encode("utf-8")
    shell = env.get_template("essay_shell.md").render().encode("utf-8")
    for c in cohorts:
        files[f"cohorts/{c.id}/essays/{SHELL}.md"] = shell
        for name in P.DOWNLOADS + (SEARCH_TABLES if c.search else ()):
            if name != "long":
                files[f"cohorts/{c.id}/data/{name}.csv"] = (paths.reports_dir(c.id) / f"{name}.csv").read_bytes()
        files[f"cohorts/{c.id}/data/long.csv"] = P.long_table(c).to_csv(
            index=False, lineterminator="\n", float_format="%.6g").encode("utf-8")
    if cross is not None:
        files["data/cross_cohort.csv"] = (paths.cross_cohort_dir() / "cross_cohort.csv").read_bytes()
    files["assets/plotly.min.js"] = _plotly_js()

    site = paths.site_dir
    docs, tmp = site / "docs", site / "build.tmp"
    _sync_dir(docs, files)
    shutil.rmtree(tmp, ignore_errors=True)  # left by a builder that was killed
    _mkdocs(docs, tmp, _nav(cohorts), simulated)
    for p in pages:
        _fill_slots(tmp, p, slots)
    atomic_write_text(tmp / S.index_file(None), S.index_script(site_docs))
    for c in cohorts:
        essay_docs = _write_essays(c, bundles[c.id], tmp, env, in_cohorts)
        atomic_write_text(tmp / S.index_file(c.id), S.index_script(cohort_docs[c.id] + essay_docs))
    p404 = tmp / "404.html"
    if p404.is_file():
        atomic_write_text(p404, relative_404(p404.read_text(encoding="utf-8")))
    for name in ("sitemap.xml", "sitemap.xml.gz"):   # lists the shells; useless without a site_url
        (tmp / name).unlink(missing_ok=True)
    return _swap_in(site, tmp)
