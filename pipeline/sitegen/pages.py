"""Page builders: report tables → sections of HTML, laid out by ``templates/_page.md``.

Each builder returns a ``Page`` (its path under docs/, title and sections). Tables go through
``render.table`` and charts through ``render.chart`` with figures from ``figures``, so escaping
and look are decided in one place. Links are relative (``use_directory_urls: false``), so the
site works from any static server. Every table holds every row: a large one travels as compact
data that the browser filters, sorts and pages over (``render.table``); the full CSV is copied
into the site too. Only the failures browser is capped (``ROW_CAP``): it publishes each
failure's files.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pandas as pd
from markupsafe import Markup

from pipeline.ids import evaluation_gen_id
from pipeline.reports.stats import lineage_clusters, precision_gain, t_cluster_mean
from pipeline.sitegen import figures
from pipeline.sitegen.data import Names, records
from pipeline.sitegen.render import Cell, Col, Link, chart, interval, is_blank, num, pct, score, script_json, status_tag, table, usd
from pipeline.store.spend import ALL as ALL_ROWS
from pipeline.sitegen.search import search_ui

ROW_CAP = 500          # failures the failures browser lists (and publishes the files of)
HEATMAP_ROWS = 80      # essays shown in the essay × evaluator heatmap (top and bottom halves)
FACTOR_LEVELS_CAP = 40  # levels per factor chart (combo_id has many)

# Cohort pages: (file stem, nav title).
COHORT_PAGES = (
    ("index", "Overview"), ("leaderboard", "Leaderboard"), ("factors", "Generation factors"),
    ("evaluators", "Evaluator heatmaps"), ("rubrics", "Rubric comparison"), ("agreement", "Agreement & variance"),
    ("essays/index", "Essays"), ("matrix", "Score matrix"), ("compare", "Compare essays"), ("rate", "Rate blind"), ("failures", "Failures"),
    ("quality", "Data quality"),
)
SEARCH_PAGE = ("search", "Search rounds")  # search cohorts only
BEST_COMBOS = 5
DOWNLOADS = ("leaderboard", "scores", "generations", "factors", "factor_effects", "paired_comparisons",
             "pivot_essay_evaluator", "pivot_generation",
             "pivot_draft_essay_template", "variance_models", "variance_rubrics", "variance_replicates",
             "variance_components", "agreement", "agreement_retest", "coverage", "spend", "issues", "long")
CI_NOTE = ("Level means and differences of the factor tables are, where a model can be fitted, estimated "
           "marginal means and contrasts of a mixed model (random intercepts along combo → draft → essay, "
           "evaluators and rubrics as fixed effects): Student-t intervals with Satterthwaite's df (method "
           "\"mixed-model EMM\" / \"mixed-model contrast\"). Otherwise (too many evaluations, a fit that fails, "
           "or a top variance at 0: the note says which) and elsewhere they are 95% Student-t intervals on the "
           "means of the highest lineage cluster the essays share (combo, else draft, else essay: essays of one "
           "draft are not independent), so n clusters is the n behind them; the method column names each "
           "interval and its df. \"not estimable\" (hover for the reason) replaces an interval that would have "
           "zero width or rest on one cluster.")
HOLM_NOTE = ("\"excludes 0\" is Holm-corrected over every comparison in the table (the family; its size in "
             "brackets), so among many comparisons a chance difference is not flagged; \"excludes 0 (row alone)\" "
             "is the row's own interval, uncorrected.")
EVALUATION_FACTORS = ("evaluation_template", "evaluation_llm")
NORM_NOTE = ("Means are of score_norm: each score rescaled to 0–1 on its own rubric's scale, so rubrics "
             "with different scales compare fairly. Failed and pending evaluations are not zeros: they only "
             "lower coverage.")


@dataclass
class Section:
    title: str = ""
    text: str | Markup = ""
    parts: list = field(default_factory=list)


@dataclass
class Page:
    path: str                      # under docs/, e.g. "cohorts/demo/index.md"
    title: str                     # browser tab and search results: fixed text and safe ids
    heading: str
    sections: list[Section]
    simulated: bool
    lead: str | Markup = ""

    @property
    def root(self) -> str:
        return "../" * self.path.count("/")

    @property
    def charts(self) -> bool:
        return any('class="dd-chart"' in str(p) for s in self.sections for p in s.parts)


@dataclass
class Cohort:
    """One cohort's report tables plus what every page of it needs."""

    id: str
    t: dict[str, pd.DataFrame]
    names: Names
    essay_ids: set[str]            # essays that get a page
    search: dict[str, pd.DataFrame] = field(default_factory=dict)  # a search cohort's search tables

    @property
    def pages(self) -> tuple[tuple[str, str], ...]:
        """(file stem, nav title) of every page of the cohort."""
        return COHORT_PAGES + ((SEARCH_PAGE,) if self.search else ())

    @property
    def simulated(self) -> bool:
        g = self.t["generations"]
        return bool(len(g) and g["simulated"].any()) or bool(len(self.t["scores"]) and self.t["scores"]["simulated"].any())

    def essay(self, essay_gen_id, prefix: str = "essays/"):
        """A link to the essay's page (``prefix`` is the path from the linking page)."""
        eid = "" if essay_gen_id is None else str(essay_gen_id)
        return Link(eid, f"{prefix}{eid}.html", code=True) if eid in self.essay_ids else Markup("<code>{}</code>").format(eid)

    def gen(self, stage, gen_id, parent_gen_id=None):
        """A gen_id linking to where it is shown: its essay's page (evaluations: their block)."""
        gid = "" if gen_id is None else str(gen_id)
        if stage == "essay" and gid in self.essay_ids:
            return Link(gid, f"essays/{gid}.html", code=True)
        if stage == "evaluation" and str(parent_gen_id) in self.essay_ids:
            return Link(gid, f"essays/{parent_gen_id}.html#{gid}", code=True)
        return Markup("<code>{}</code>").format(gid) if gid else ""

    def concepts(self, combo_id) -> str:
        combo = self.names.combo(combo_id)
        return " · ".join(c["name"] for c in combo["concepts"]) if combo else str(combo_id or "")


def _csv_link(name: str) -> Markup:
    """A link from a cohort page to one of its report CSVs (copied under data/)."""
    return Markup('<a href="data/{}.csv">{}.csv</a>').format(name, name)


_SCALE_IN_NAME = re.compile(r"\(\s*-?[\d.]+\s*[-–]\s*-?[\d.]+\s*\)")


def _rubric_label(c: Cohort, template_id, lo=None, hi=None) -> str:
    """A rubric's name with its scale, unless the name already states one (``Novelty (0-9)``)."""
    label = c.names.template("evaluation", template_id)
    if lo is None or hi is None or _SCALE_IN_NAME.search(label):
        return label
    return f"{label} ({num(lo)}–{num(hi)})"


def _norm_axis(rubric_name: str) -> str:
    """An axis title for a rubric's score_norm: the scale in the rubric's name (``Novelty
    (0-9)``) is not the axis' scale, so it is dropped."""
    bare = _SCALE_IN_NAME.sub("", rubric_name).strip() or rubric_name
    return f"{bare}: score_norm (0–1)"


def _ci(rows: list[dict], lo: str = "ci_low", hi: str = "ci_high", key: str = "ci", note: str = "ci_note") -> None:
    """Add a printable 95% interval to report rows (in place): ``not estimable`` when the table
    says why there is none (``ci_note``), never a zero-width interval."""
    for r in rows:
        r[key] = interval(r.get(lo), r.get(hi))
        if not r[key] and str(r.get(note) or "").startswith("not estimable"):
            r[key] = Cell(Markup('<span title="{}">not estimable</span>').format(r[note]), sort="")


def _known_sum(values) -> float:
    """A sum that stays unknown (NaN) when any part is unknown, instead of counting it as 0."""
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
    return float("nan") if v.isna().any() else float(v.sum())


def mean_text(mean, lo=None, hi=None, n=None, unit: str = "essays") -> str:
    """A mean as a reader should see it in a hover: rounded, with its 95% interval and n."""
    ci = interval(lo, hi) or "(no interval)"
    return f"{num(mean) or 'no score'} {ci}, n={num(n) or 0} {unit}"


def _leaderboard_filter(c: Cohort, pairs: list[tuple[str, str, str]]) -> str:
    """A link to the leaderboard filtered to display values (``[(column key, stage, id)]``)."""
    q = {}
    for key, stage, value in pairs:
        q[f"leaderboard.{key}"] = c.names.model(value) if key.endswith("_llm_name") else c.names.template(stage, value)
    return "leaderboard.html?" + urlencode(q)


def cards(items: list[tuple[str, str]]) -> Markup:
    body = Markup("").join(
        Markup('<div class="dd-card"><div class="dd-card-value">{}</div><div class="dd-card-label">{}</div></div>\n')
        .format(v, k) for k, v in items)
    return Markup('<div class="dd-cards">\n{}</div>\n').format(body)


def _links(items: list[tuple[str, str]]) -> Markup:
    lis = Markup("").join(Markup('<li><a href="{}">{}</a></li>\n').format(h, t) for t, h in items)
    return Markup("<ul>\n{}</ul>\n").format(lis)


# ---------------------------------------------------------------------------------------------
# Cohort pages


def overview(c: Cohort) -> Page:
    g, s, cov = c.t["generations"], c.t["scores"], c.t["coverage"]
    by_stage = {r["stage"]: r for r in records(cov)}
    ev = by_stage.get("evaluation", {})
    es = by_stage.get("essay", {})
    failures = int((g["status"] == "failed").sum()) if len(g) else 0
    tokens = (cov["prompt_tokens"].sum() + cov["completion_tokens"].sum()) if len(cov) else 0
    cost = _known_sum(cov["cost_usd"]) if len(cov) else float("nan")
    key_numbers = cards([
        ("essays done / expected", f"{num(es.get('done'))} / {num(es.get('expected'))}"),
        ("evaluations scored / expected", f"{num(ev.get('done'))} / {num(ev.get('expected'))}"),
        ("failed generations", num(failures) or "0"),
        ("tokens (prompt + completion)", num(tokens) or "0"),
        ("cost", usd(cost)),
    ])
    cov_table = table([Col("stage"), Col("expected", kind="int"), Col("done", kind="int"), Col("stale", kind="int"),
                       Col("failed", kind="int"),
                       Col("pending", kind="int"), Col("coverage", kind="pct"), Col("prompt_tokens", kind="int"),
                       Col("completion_tokens", kind="int"), Col("cost_usd", kind="usd"),
                       Col("n_cost_unknown", kind="int", title="model calls that recorded no cost"),
                       Col("n_simulated", kind="int")],
                      records(cov), sortable=False, csv="data/coverage.csv")
    scored = s[s["score_norm"].notna()] if len(s) else s
    hist_groups = {
        _rubric_label(c, t, grp["scale_min"].iloc[0], grp["scale_max"].iloc[0]): grp["score_norm"].tolist()
        for t, grp in scored.groupby("evaluation_template", sort=True)} if len(scored) else {}
    hist = (chart(figures.histogram(hist_groups, title="score_norm by rubric", x_title="score_norm (0–1)",
                                    bin_size=0.05),
                  "score-histogram", "Every scored evaluation, one colour per rubric. Rubrics have different "
                  "scales, so each score is shown as score_norm = (score − scale min) / (scale max − scale min).")
            if hist_groups else Markup('<p class="dd-empty">No scored evaluations yet.</p>'))
    fails = (g[g["status"] != "done"].groupby(["stage", "status", "error"], sort=True).size()
             .reset_index(name="n") if len(g) else pd.DataFrame())
    fail_table = table([Col("stage"), Col("status"), Col("error"), Col("n", kind="int")], records(fails),
                       empty="Every generation is done.", tid="failures")
    spend_rows = records(c.t["spend"])
    for r in spend_rows:
        r["stage"] = "all stages" if r["stage"] == ALL_ROWS else r["stage"]
        r["llm"] = "all models" if r["llm_model_id"] == ALL_ROWS else c.names.model(r["llm_model_id"])
    usage_table = table([Col("stage"), Col("llm"), Col("calls", kind="int", title="model calls recorded"),
                         Col("prompt_tokens", kind="int"), Col("completion_tokens", kind="int"),
                         Col("cost_usd", kind="usd", title="unknown when any call's cost is unknown"),
                         Col("cost_reported_usd", "reported", kind="usd", title="as the provider reported it"),
                         Col("cost_estimated_usd", "estimated", kind="usd", title="tokens × llm_models.csv prices"),
                         Col("n_cost_unknown", "calls of unknown cost", kind="int")],
                        spend_rows, tid="spend", csv="data/spend.csv", empty="No model calls recorded yet.")
    pages = _links([(t, f"{stem}.html") for stem, t in c.pages[1:]])
    downloads = Markup(" · ").join(_csv_link(n) for n in DOWNLOADS)
    return Page(f"cohorts/{c.id}/index.md", f"{c.id}: overview", f"Cohort {c.id}", [
        Section(parts=[key_numbers]),
        Section("Coverage per stage", "Expected generations per stage and how many are done, stale (made from "
                "inputs since changed: rerun the cohort), failed or pending.",
                [cov_table]),
        Section("Score distribution", "", [hist]),
        Section("Failures", Markup('Generations that are not done, by reason. Each failure with its reason, '
                                   'the end of its response and its files is in the <a href="failures.html">failures '
                                   'browser</a>; missing files and catalog problems on the <a href="quality.html">data '
                                   'quality</a> page.'), [fail_table]),
        Section("Tokens and spend", "Per stage and model, then per stage and for the cohort. A call's cost is "
                "the provider's own figure when it reports one, else its tokens at the catalog prices (estimated), "
                "else unknown; a total is unknown when any of its calls is (the offline simulator is free).",
                [usage_table]),
        Section("Pages", "", [pages]),
        Section("Downloads", Markup("Report tables (CSV): ") + downloads),
    ], c.simulated, lead=f"{len(c.essay_ids):,} essays; every table below is built from the cohort's report CSVs.")


def _lineage_cols(c: Cohort, rows: list[dict]) -> None:
    """Add display names for the generation factors to report rows (in place)."""
    for r in rows:
        r["concepts"] = c.concepts(r.get("combo_id"))
        for st in ("draft", "essay"):
            if f"{st}_template" in r:
                r[f"{st}_template_name"] = c.names.template(st, r[f"{st}_template"])
            if f"{st}_llm" in r:
                r[f"{st}_llm_name"] = c.names.model(r[f"{st}_llm"])


LINEAGE_COLS = [Col("concepts", wrap=True), Col("draft_template_name", "draft_template"), Col("draft_llm_name", "draft_llm"),
                Col("essay_template_name", "essay_template"), Col("essay_llm_name", "essay_llm")]


def leaderboard(c: Cohort) -> Page:
    lb = c.t["leaderboard"]
    rows, note = records(lb), ""
    _lineage_cols(c, rows)
    _ci(rows)
    for r in rows:
        r["essay"] = c.essay(r["essay_gen_id"])
    for r in rows:
        r["rank_ci"] = (f"{num(r['rank_ci_low'])}–{num(r['rank_ci_high'])}"
                        if not is_blank(r.get("rank_ci_low")) else "")
    per_cell = "over the essay's n_cells evaluator × rubric cells (replicates averaged first)"
    cols = [Col("rank", kind="int"), Col("essay", "essay_gen_id"),
            Col("mean", kind="num", title=f"mean score_norm (0–1) {per_cell}, each cell less its "
                "evaluator × rubric effect, so an essay missing a harsh evaluator does not rank higher for that"),
            Col("ci", "95% CI (t over cells)", title=f"95% t interval of the adjusted mean {per_cell}, with the "
                "wider of its own cells' sd and the sd pooled over essays"),
            Col("rank_ci", "rank 95% range", title="ranks this essay takes in 95% of 1,000 simulated leaderboards"),
            Col("tier", kind="int", title="essays in one tier cannot be told apart from the tier's first essay"),
            Col("mean_raw", "mean (raw)", kind="num", title=f"unadjusted mean score_norm {per_cell}"),
            Col("n_cells", kind="int"), Col("n_cells_missing", "missing cells", kind="int",
                                            title="evaluator × rubric cells of the cohort this essay has no score in"),
            Col("std", "std (cells)", kind="num", title=f"sample std {per_cell}"),
            Col("min", "min (cell)", kind="num", title=f"lowest cell mean; a single evaluation can be lower"),
            Col("max", "max (cell)", kind="num", title=f"highest cell mean; a single evaluation can be higher"),
            Col("n", "n evaluations", kind="int", title="scored evaluations"),
            Col("expected", kind="int", title="evaluations in the cohort"), Col("coverage", kind="pct"),
            *LINEAGE_COLS]
    means = lb["mean"].dropna().tolist() if len(lb) else []
    parts = [table(cols, rows, note=Markup(note) if note else "", empty="No essays in this cohort.", tid="leaderboard",
                   csv="data/leaderboard.csv")]
    hist = chart(figures.histogram({"essays": means}, title="Essay mean score_norm", x_title="mean score_norm",
                                   bin_size=0.025), "leaderboard-hist") if means else ""
    return Page(f"cohorts/{c.id}/leaderboard.md", f"{c.id}: leaderboard", "Leaderboard", [
        Section("", NORM_NOTE + " An essay's mean, std, min, max and 95% interval (t, over cells) are all "
                "over its n_cells cells: one cell is one evaluation model × rubric with its replicates averaged, "
                "so a single evaluation on the essay's page can lie outside min–max. The mean is adjusted for "
                "which evaluators scored the essay (mean (raw) is not). Ranks are uncertain: essays in the same "
                "tier cannot be told apart, and the rank range says where each could stand. Click a column "
                "header to sort.", parts),
        Section("Distribution of essay means", "", [hist] if hist else []),
    ], c.simulated, lead="Essays ranked by mean score_norm over every scored evaluation.")


JOINT = " × "


def _factor_label(c: Cohort, factor: str, level) -> str:
    """A level's display name; a joint (aliased) factor's level names each part."""
    parts, levels = factor.split(JOINT), str(level).split(JOINT)
    if len(parts) > 1 and len(parts) == len(levels):
        return JOINT.join(_factor_label(c, p, lv) for p, lv in zip(parts, levels))
    stage = factor.split("_")[0]
    if factor.endswith("_llm"):
        return c.names.model(level)
    if factor.endswith("_template"):
        return c.names.template(stage, level)
    return str(level)


def _yes_no(v) -> str:
    s = "" if v is None else str(v).strip().lower()
    return {"true": "yes", "false": "no"}.get(s, "")


FACTOR_COLS = [Col("n_essays", kind="int"), Col("n", "n evaluations", kind="int"), Col("n_unscored", kind="int"),
               Col("mean", kind="num", title="mean score_norm, adjusted for which evaluators and "
                   "rubrics scored the level"), Col("ci", "95% CI"),
               Col("ci_method", "method", title="how the interval was made (mixed-model EMM, or t over the lineage "
                   "clusters; its df)"),
               Col("n_clusters", kind="int", title="independent units behind the interval"),
               Col("mean_marginal", "mean (raw)", kind="num", title="raw mean score_norm over the scored evaluations"),
               Col("std", "std (evaluations)", kind="num", title="sample std of single evaluations (spread, "
                   "not uncertainty of the mean)"),
               Col("min", kind="num"), Col("max", kind="num"), Col("share_high", kind="pct"),
               Col("share_low", kind="pct"), Col("share_max", kind="pct")]
EFFECT_COLS = [Col("rubric_name", "rubric"), Col("level_name", "level"), Col("reference_name", "reference"),
               Col("n_essays", kind="int"), Col("n_essays_reference", kind="int"),
               Col("diff", kind="num", title="level − reference, score_norm, adjusted for which "
                   "evaluators and rubrics scored them"),
               Col("ci", "95% CI"), Col("ci_method", "method", title="mixed-model contrast, else paired t within shared "
                                                                     "combos/drafts or Welch t over the levels' "
                                                                     "cluster means"),
               Col("diff_marginal", "diff (raw)", kind="num", title="mean(level) − mean(reference), unadjusted"),
               Col("p_holm", "p (Holm)", kind="num", title="p-value after Holm's correction over the table"),
               Col("holm", "excludes 0", title="Holm: yes when the test corrected over the table's comparisons (the "
                   "family, its size in brackets) rejects 0 at 5%"),
               Col("excludes_zero", "excludes 0 (row alone)", title="yes when this row's own 95% interval excludes 0, "
                   "uncorrected"),
               Col("note", wrap=True)]


def factors(c: Cohort) -> Page:
    f, fe = c.t["factors"], c.t["factor_effects"]
    sections: list[Section] = [Section("", NORM_NOTE + " " + CI_NOTE + " " + HOLM_NOTE)]
    if not len(f):
        sections.append(Section(parts=[Markup('<p class="dd-empty">No scored evaluations yet.</p>')]))
    shown = [x for x in dict.fromkeys(f["factor"]) if x != "combo_id" and not any(e in x for e in EVALUATION_FACTORS)] \
        if len(f) else []
    aliased = [(x, n) for x, n in dict.fromkeys(zip(f["factor"], f["note"].fillna(""))) if "aliased" in n] \
        if len(f) else []
    confounded = sorted({str(x) for x, n in zip(f["factor"], f["note"].fillna("")) if "confounded" in n
                         or "unbalanced" in n}) if len(f) else []
    if confounded:
        sections.append(Section("Partial confounding", Markup(
            "Some levels were scored by a different mix of evaluators or rubrics than others, so their raw means "
            "differ for that reason too: {}. The means and differences shown are adjusted for it (the raw ones "
            "are beside them); the note of each row says what moved.").format(
            Markup(", ").join(Markup("<code>{}</code>").format(x) for x in confounded))))
    if aliased:
        items = Markup("").join(Markup("<li><code>{}</code>: {}</li>\n").format(x, n) for x, n in aliased)
        sections.append(Section("Aliased factors", "This cohort's design does not separate some factors: their "
                                "levels always occur together, so any difference belongs to the joint factor "
                                "and cannot be attributed to one of them.", [Markup("<ul>\n{}</ul>\n").format(items)]))
    for factor in shown:
        sub = f[f["factor"] == factor]
        note = str(sub["note"].iloc[0] or "")
        all_levels = list(dict.fromkeys(sub["level"]))
        levels = all_levels[:FACTOR_LEVELS_CAP]
        labels = [_factor_label(c, factor, lv) for lv in levels]
        parts = []
        if len(levels) > 1:
            series, intervals, hover = {}, {}, {}
            for rubric, grp in sub.groupby("rubric", sort=False):
                grp = grp.set_index("level").reindex(levels)
                name = "all rubrics" if rubric == "(all)" else c.names.template("evaluation", rubric)
                series[name] = grp["mean"].tolist()
                intervals[name] = (grp["ci_low"].tolist(), grp["ci_high"].tolist())
                hover[name] = [f"{lb}: mean {mean_text(m, lo, hi, k, 'independent units')}; {meth}"
                               for lb, m, lo, hi, k, meth in zip(labels, grp["mean"], grp["ci_low"], grp["ci_high"],
                                                                 grp["n_clusters"], grp["ci_method"].fillna(""))]
            fig = figures.bars(labels, series, intervals=intervals, hover=hover, title=f"Mean score_norm by {factor}",
                               y_title="mean score_norm (95% CI)", y_range=(0, 1))
            subset = (f" A subset: the first {len(levels)} of {len(all_levels):,} levels; every level is in the "
                      "table below.") if len(all_levels) > len(levels) else ""
            parts.append(chart(fig, f"factor-{factor}", "Whiskers: 95% interval, mixed-model EMM or t over the "
                                                        "lineage clusters (the table's method column)." + subset))
        pooled = records(sub[sub["rubric"] == "(all)"])
        _ci(pooled)
        for r in pooled:
            r["level_name"] = _factor_label(c, factor, r["level"])
        parts.append(table([Col("level_name", factor, filter="select")] + FACTOR_COLS, pooled, tid=f"factor-{factor}",
                           csv="data/factors.csv"))
        eff = records(fe[fe["factor"] == factor]) if len(fe) else []
        _ci(eff)
        for r in eff:
            r["rubric_name"] = "all rubrics" if r["rubric"] == "(all)" else c.names.template("evaluation", r["rubric"])
            r["level_name"] = _factor_label(c, factor, r["level"])
            r["reference_name"] = _factor_label(c, factor, r["reference"])
            r["excludes_zero"] = _yes_no(r["excludes_zero"])
            r["holm"] = _yes_no(r["excludes_zero_holm"])
            if r["holm"]:
                r["holm"] = f"{r['holm']} (of {num(r['n_family'])})"
        if eff:
            parts.append(Markup("<p>Differences from the reference level, adjusted for evaluators and rubrics.</p>\n"))
            parts.append(table(EFFECT_COLS, eff, tid=f"effects-{factor}", csv="data/factor_effects.csv"))
        sections.append(Section(factor, note, parts))
    if len(f) and any(x in set(f["factor"]) for x in EVALUATION_FACTORS):
        sections.append(Section("Evaluation factors", Markup(
            'Rubrics and evaluation models are compared on matched units (the same essay scored by both) on the '
            '<a href="rubrics.html">rubric comparison</a> page; their level means (adjusted for each other, and '
            'raw) are in {}.').format(
            _csv_link("factors"))))
    combos = records(f[(f["factor"] == "combo_id") & (f["rubric"] == "(all)")].sort_values("mean", ascending=False)) \
        if len(f) else []
    _ci(combos)
    for r in combos:
        r["concepts"] = c.concepts(r["level"])
    sections.append(Section("combo_id", "Concept combinations, best first (all rubrics pooled).", [table(
        [Col("level", "combo_id", kind="code"), Col("concepts", wrap=True), Col("n_essays", kind="int"),
         Col("n", "n evaluations", kind="int"), Col("mean", kind="num"), Col("ci", "95% CI"),
         Col("ci_method", "method"), Col("share_high", kind="pct"), Col("share_low", kind="pct")],
        combos, tid="combos", csv="data/factors.csv")]))
    pg = c.t["pivot_generation"]
    for stage in ("draft", "essay"):
        sub = pg[pg["stage"] == stage] if len(pg) else pg
        if not len(sub):
            continue
        tpls, llms = list(dict.fromkeys(sub["template"])), list(dict.fromkeys(sub["llm"]))
        cis = _cell_cis(c.t["scores"], [f"{stage}_template", f"{stage}_llm"])
        z = [[cis.get((t, m), (None,))[0] for m in llms] for t in tpls]
        hover = [[f"{c.names.template(stage, t)} × {c.names.model(m)}<br>mean score_norm "
                  f"{mean_text(*cis.get((t, m), (None, None, None, 0)))}" for m in llms] for t in tpls]
        links = [[_leaderboard_filter(c, [(f"{stage}_template_name", stage, t), (f"{stage}_llm_name", stage, m)])
                  for m in llms] for t in tpls]
        fig = figures.heatmap(z, [c.names.model(m) for m in llms], [c.names.template(stage, t) for t in tpls],
                              title=f"{stage}_template × {stage}_llm: mean score_norm", colorbar_title="mean",
                              zmin=0, zmax=1, hover=hover, links=links)
        sections.append(Section(f"{stage}_template × {stage}_llm", "Hover a cell for its 95% interval (t over "
                                "essays, unadjusted) and n; click "
                                "it for those essays on the leaderboard.", [chart(fig, f"pivot-{stage}")]))
    pd_ = c.t["pivot_draft_essay_template"]
    if len(pd_):
        dts, ets = list(dict.fromkeys(pd_["draft_template"])), list(dict.fromkeys(pd_["essay_template"]))
        cis = _cell_cis(c.t["scores"], ["draft_template", "essay_template"])
        z = [[cis.get((d, e), (None,))[0] for e in ets] for d in dts]
        hover = [[f"{c.names.template('draft', d)} × {c.names.template('essay', e)}<br>mean score_norm "
                  f"{mean_text(*cis.get((d, e), (None, None, None, 0)))}" for e in ets] for d in dts]
        links = [[_leaderboard_filter(c, [("draft_template_name", "draft", d), ("essay_template_name", "essay", e)])
                  for e in ets] for d in dts]
        fig = figures.heatmap(z, [c.names.template("essay", e) for e in ets], [c.names.template("draft", d) for d in dts],
                              title="draft_template × essay_template: mean score_norm", colorbar_title="mean",
                              zmin=0, zmax=1, hover=hover, links=links)
        sections.append(Section("draft_template × essay_template", "", [chart(fig, "pivot-draft-essay")]))
    return Page(f"cohorts/{c.id}/factors.md", f"{c.id}: generation factors", "Generation factors", sections,
                c.simulated, lead="How each generation choice (template, model, mode, concepts) relates to scores.")


def _cell_cis(scores: pd.DataFrame, keys: list[str]) -> dict[tuple, tuple]:
    """``{(key values): (mean, ci_low, ci_high, n_essays)}`` of score_norm per cell: a t interval
    over the means of the highest lineage cluster the cell's essays share, as the tables use."""
    sc = scores[scores["score_norm"].notna()] if len(scores) else scores
    if not len(sc):
        return {}
    out = {}
    for k, g in sc.groupby(keys, sort=True):
        level, clusters = lineage_clusters(g)
        ci = t_cluster_mean(g["score_norm"].to_numpy(dtype=float), clusters, level)
        out[k] = (ci["estimate"], ci["ci_low"], ci["ci_high"], g["essay_gen_id"].nunique())
    return out


def _evaluator_columns(c: Cohort, pe: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(pe["evaluation_llm"], pe["evaluation_template"])))


def evaluators(c: Cohort) -> Page:
    pe, lb, s = c.t["pivot_essay_evaluator"], c.t["leaderboard"], c.t["scores"]
    sections: list[Section] = []
    if len(pe):
        scored = set(pe.loc[pe["mean_norm"].notna(), "essay_gen_id"])
        order = [e for e in lb["essay_gen_id"] if e in scored] if len(lb) else []
        ranked = set(order)
        order += sorted(scored - ranked)
        note = "Every scored essay of the cohort, best first."
        gap = ""
        title = "Essays × evaluator (evaluation_llm · evaluation_template)"
        if len(order) > HEATMAP_ROWS:
            half = HEATMAP_ROWS // 2
            # a row between the halves says how many essays it leaves out, so the join is not missed
            gap = f"··· {len(order) - 2 * half:,} essays not shown ···"
            order = order[:half] + [gap] + order[-half:]
            title = f"The {half} best and {half} worst of {len(scored):,} essays × evaluator"
            note = (f"A subset: the {half} best and {half} worst of the {len(scored):,} scored essays by mean "
                    "score_norm (the marked row between them stands for the rest); every essay is in the "
                    '<a href="matrix.html">score matrix</a>, pivot_essay_evaluator.csv and on its own page.')
        cols = _evaluator_columns(c, pe)
        cell = {(r["essay_gen_id"], r["evaluation_llm"], r["evaluation_template"]): r for r in records(pe)}
        first_eval = {}
        for r in records(s.sort_values("evaluation_replicate", kind="stable")):
            first_eval.setdefault((r["essay_gen_id"], r["evaluation_llm"], r["evaluation_template"]), r["evaluation_gen_id"])
        z, hover, links = [], [], []
        for e in order:
            zr, hr, lr = [], [], []
            if e == gap:
                z.append([None] * len(cols))
                hover.append([gap] * len(cols))
                links.append([""] * len(cols))
                continue
            for m, t in cols:
                r = cell.get((e, m, t)) or {}
                zr.append(r.get("mean_norm"))
                hr.append(f"{e}<br>{c.names.model(m)} · {c.names.template('evaluation', t)}<br>"
                          f"score_norm {num(r.get('mean_norm')) or 'none'}; raw mean {num(r.get('mean')) or 'none'} on "
                          f"{num(r.get('scale_min'))}–{num(r.get('scale_max'))}, n={num(r.get('n')) or 0} replicates"
                          f" scored, {num(r.get('n_unscored')) or 0} unscored")
                v = first_eval.get((e, m, t))
                lr.append(f"essays/{e}.html#{v}" if v and e in c.essay_ids else "")
            z.append(zr)
            hover.append(hr)
            links.append(lr)
        xl = [f"{c.names.model(m)} · {c.names.template('evaluation', t)}" for m, t in cols]
        fig = figures.heatmap(z, xl, order, title=title,
                              colorbar_title="score_norm", zmin=0, zmax=1, hover=hover, links=links,
                              row_links=[f"essays/{e}.html" if e in c.essay_ids else "" for e in order])
        sections.append(Section("Essays × evaluator", Markup(note) + Markup(" Cells are the mean score_norm of the replicates; "
                                "blank cells have no score. Click a cell for that evaluation's reasoning, an essay's "
                                "id for its page; every essay "
                                'and every replicate is in the <a href="matrix.html">score matrix</a>.'),
                                [chart(fig, "essay-evaluator")]))
    sc = s[s["score_norm"].notna()] if len(s) else s
    if len(sc):
        grid = sc.groupby(["evaluation_llm", "evaluation_template"], sort=True).agg(
            n=("score", "size"), raw_mean=("score", "mean"), mean=("score_norm", "mean"), std=("score_norm", "std"),
            scale_min=("scale_min", "first"), scale_max=("scale_max", "first")).reset_index()
        models, rubrics = list(dict.fromkeys(grid["evaluation_llm"])), list(dict.fromkeys(grid["evaluation_template"]))
        cis = _cell_cis(s, ["evaluation_llm", "evaluation_template"])
        z = [[cis.get((m, t), (None,))[0] for t in rubrics] for m in models]
        hover = [[f"{c.names.model(m)} · {c.names.template('evaluation', t)}<br>mean score_norm "
                  f"{mean_text(*cis.get((m, t), (None, None, None, 0)))}" for t in rubrics] for m in models]
        mcols = matrix_columns(c)
        links = [[f"matrix.html?matrix.sort=m{mcols.index((m, t))}:desc" if (m, t) in mcols else "" for t in rubrics]
                 for m in models]
        fig = figures.heatmap(z, [c.names.template("evaluation", t) for t in rubrics], [c.names.model(m) for m in models],
                              title="evaluation_llm × evaluation_template: mean score_norm", colorbar_title="mean",
                              zmin=0, zmax=1, hover=hover, links=links)
        rows = records(grid)
        for r in rows:
            r["evaluator"] = c.names.model(r["evaluation_llm"])
            r["rubric"] = _rubric_label(c, r["evaluation_template"], r["scale_min"], r["scale_max"])
            _, lo, hi, r["n_essays"] = cis[(r["evaluation_llm"], r["evaluation_template"])]
            r["ci"] = interval(lo, hi)
            # a raw mean means something only on its own rubric's scale: it is shown with it, as text
            r["raw"] = f"{num(r['raw_mean'])} on {score(r['scale_min'])}–{score(r['scale_max'])}"
        tbl = table([Col("evaluator", "evaluation_llm"), Col("rubric", "evaluation_template"),
                     Col("n_essays", kind="int"), Col("n", "n evaluations", kind="int"),
                     Col("mean", kind="num", title="mean score_norm (each score rescaled to 0–1 on its rubric's scale)"),
                     Col("ci", "95% CI", title="95% t interval of the mean score_norm over the means of the highest "
                         "lineage cluster its essays share (unadjusted: each cell is its own evaluator and rubric)"),
                     Col("std", "std (evaluations)", kind="num", title="sample std of score_norm"),
                     Col("raw", "raw mean (rubric scale)", title="mean raw score on the rubric's own scale: not "
                         "comparable across rubrics with different scales")],
                    rows, tid="evaluator-rubric", csv="data/scores.csv")
        sections.append(Section("Evaluator × rubric", "How harsh each evaluation model is on each rubric. Cells "
                                "scored on different essays are not comparable with each other: for matched "
                                "comparisons see the rubric comparison page.",
                                [chart(fig, "evaluator-rubric"), tbl]))
    if not sections:
        sections.append(Section(parts=[Markup('<p class="dd-empty">No evaluations yet.</p>')]))
    return Page(f"cohorts/{c.id}/evaluators.md", f"{c.id}: evaluator heatmaps", "Evaluator heatmaps", sections,
                c.simulated, lead="Each essay's scores from every evaluation model and rubric.")


PAIR_COLS = [Col("a_name", "level a"), Col("b_name", "level b"), Col("n_units", kind="int"),
             Col("n_essays", kind="int"), Col("mean_a", kind="num", title="mean score_norm of a over the matched units"),
             Col("mean_b", kind="num", title="mean score_norm of b over the matched units"),
             Col("diff", "diff (a − b)", kind="num", title="mean paired difference a − b, score_norm"),
             Col("ci", "95% CI"), Col("ci_method", "method", title="paired t over the lineage clusters of the "
                                                                   "matched units, with its df"),
             Col("holm", "excludes 0", title="Holm: yes when the test corrected over the table's comparisons (the "
                 "family, its size in brackets) rejects 0 at 5%"),
             Col("excludes_zero", "excludes 0 (row alone)", title="yes when this row's own 95% interval excludes 0"),
             Col("r", kind="num"), Col("r_ci", "r 95% CI (Fisher z)", title="95% interval of r by Fisher's z over "
                                                                             "the clusters")]


def _pair_rows(c: Cohort, pc: pd.DataFrame, factor: str) -> list[dict]:
    rows = records(pc[pc["factor"] == factor]) if len(pc) else []
    _ci(rows)
    _ci(rows, "r_ci_low", "r_ci_high", "r_ci")
    for r in rows:
        for k in ("a", "b"):
            lv = r[f"level_{k}"]
            r[f"{k}_name"] = c.names.template("evaluation", lv) if factor == "evaluation_template" else c.names.model(lv)
        r["excludes_zero"] = _yes_no(r["excludes_zero"])
        r["holm"] = _yes_no(r["excludes_zero_holm"])
        if r["holm"]:
            r["holm"] = f"{r['holm']} (of {num(r['n_family'])})"
    return rows


def rubrics(c: Cohort) -> Page:
    s, pc, vr = c.t["scores"], c.t["paired_comparisons"], c.t["variance_rubrics"]
    sc = s[s["score_norm"].notna()] if len(s) else s
    sections: list[Section] = []
    if len(sc):
        groups = {f"{c.names.template('evaluation', t)} · {c.names.model(m)}": grp["score_norm"].tolist()
                  for (t, m), grp in sc.groupby(["evaluation_template", "evaluation_llm"], sort=True)}
        sections.append(Section("Score distribution per rubric and evaluator", "Each box is one rubric scored by "
                                "one evaluation model, on score_norm.", [chart(
            figures.boxes(groups, title="score_norm by evaluation_template · evaluation_llm", y_title="score_norm"),
            "rubric-boxes")]))
    sections.append(Section("Rubrics compared on matched units", "Two rubrics are compared only where the same "
                            "evaluation model scored the same essay with both (replicates averaged first), so a "
                            "harsher evaluator on one rubric cannot pass for a harsher rubric. n_units: matched "
                            "(essay, evaluation model) units. " + CI_NOTE + " " + HOLM_NOTE,
                            [table(PAIR_COLS, _pair_rows(c, pc, "evaluation_template"), tid="pairs-rubrics",
                                   csv="data/paired_comparisons.csv",
                                   empty="No two rubrics were used by the same evaluator on the same essay.")]))
    sections.append(Section("Evaluation models compared on matched units", "The same, for evaluation models: "
                            "matched on the same essay and rubric.",
                            [table(PAIR_COLS, _pair_rows(c, pc, "evaluation_llm"), tid="pairs-models",
                                   csv="data/paired_comparisons.csv",
                                   empty="No two evaluation models scored the same essay with the same rubric.")]))
    if len(sc):
        cells = (sc.groupby(["essay_gen_id", "evaluation_llm", "evaluation_template"])["score_norm"].mean()
                 .unstack("evaluation_template"))
        names = list(cells.columns)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]][:3]
        for a, b in pairs:
            both = cells[[a, b]].dropna()
            la, lb_ = c.names.template("evaluation", a), c.names.template("evaluation", b)
            labels = [f"{e} · {c.names.model(m)}" for e, m in both.index]
            fig = figures.scatter(both[a].tolist(), both[b].tolist(), labels,
                                  title=f"{la} vs {lb_}: matched (essay, evaluator) units, score_norm",
                                  x_title=_norm_axis(la), y_title=_norm_axis(lb_))
            row = pc[(pc["factor"] == "evaluation_template") & (pc["level_a"] == a) & (pc["level_b"] == b)] \
                if len(pc) else pc
            r = records(row)[0] if len(row) else {}
            text = (f"{len(both):,} matched units from {both.index.get_level_values(0).nunique():,} essays; "
                    f"Pearson r = {num(r.get('r'))} {interval(r.get('r_ci_low'), r.get('r_ci_high'))}".rstrip()
                    + ". Each point is one essay scored by one evaluation model with both rubrics.")
            sections.append(Section(f"{la} vs {lb_}", text, [chart(fig, f"rubric-pair-{a}-{b}")]))
    if len(vr):
        defined = vr[vr["n"] >= 2]
        counts = defined["agreement"].value_counts()
        sections.append(Section("Do rubrics agree?", f"Per essay × evaluation model scored with ≥ 2 rubrics "
                                f"({len(defined):,} units; {len(vr) - len(defined):,} units with a single rubric "
                                "are excluded): the range of the rubric means (score_norm). high: range ≤ 10% of "
                                "the scale; moderate: ≤ 25%; low: larger.",
                                [table([Col("agreement"), Col("n", "units", kind="int")],
                                       [{"agreement": k, "n": v} for k, v in counts.items()], sortable=False)]))
    return Page(f"cohorts/{c.id}/rubrics.md", f"{c.id}: rubric comparison", "Rubric comparison", sections,
                c.simulated, lead="The same essays judged by different rubrics and evaluation models, compared "
                                  "only where they match.")


def _variance_components(c: Cohort) -> list[Section]:
    """The decomposition per rubric: table, chart and what more evaluations would buy."""
    vc = c.t.get("variance_components")
    if vc is None or not len(vc):
        return []
    rows = records(vc)
    for r in rows:  # shown as sds (score_norm units, readable at two decimals); variances are in the CSV
        r["sd_ci_low"], r["sd_ci_high"] = (math.sqrt(r[k]) if not is_blank(r.get(k)) else None
                                           for k in ("ci_low", "ci_high"))
    _ci(rows, "sd_ci_low", "sd_ci_high", "ci")
    for r in rows:
        r["rubric"] = c.names.template("evaluation", r["evaluation_template"])
    fitted = vc[vc["component"] != "(none)"]
    comps = list(dict.fromkeys(fitted["component"]))
    series, intervals, readings = {}, {}, []
    s = c.t["scores"]
    sc = s[s["score_norm"].notna()] if len(s) else s
    for rubric, grp in fitted.groupby("evaluation_template", sort=True):
        name = c.names.template("evaluation", rubric)
        g = grp.set_index("component").reindex(comps)
        series[name] = g["sd"].tolist()
        intervals[name] = ((g["ci_low"] ** 0.5).tolist(), (g["ci_high"] ** 0.5).tolist())
        sub = sc[sc["evaluation_template"] == rubric]
        e = sub.groupby("essay_gen_id")["evaluation_llm"].nunique().median() if len(sub) else 1
        r_ = sub.groupby(["essay_gen_id", "evaluation_llm"]).size().median() if len(sub) else 1
        gain = precision_gain(dict(zip(grp["component"], grp["variance"])), e, r_)
        if not math.isfinite(gain["noise"]) or gain["noise"] <= 0:
            continue
        rep_cut = 1 - gain["noise_more_replicates"] / gain["noise"]
        ev_cut = 1 - gain["noise_more_evaluators"] / gain["noise"]
        readings.append(f"{name}: an essay's mean over {num(e)} evaluator(s) × {num(r_)} replicate(s) has noise "
                        f"sd {math.sqrt(gain['noise']):.3f} (reliability {gain['reliability']:.2f}); doubling the "
                        f"replicates would cut its variance by {rep_cut:.0%}, doubling the evaluators by "
                        f"{ev_cut:.0%}, for the same number of evaluations.")
    parts = []
    if series:
        parts.append(chart(figures.bars(comps, series, intervals=intervals,
                                        title="Variance components of score_norm, as standard deviations",
                                        y_title="sd of score_norm (95% CI, Satterthwaite)"), "variance-components",
                           "Whiskers: Satterthwaite χ² intervals (square roots); none where the data cannot bound "
                           "the component."))
    parts.append(table([Col("rubric", "evaluation_template"), Col("component"),
                        Col("sd", kind="num", title="square root of the variance component, score_norm units"),
                        Col("ci", "sd 95% CI (Satterthwaite χ²)"),
                        Col("share", "share of variance", kind="pct"),
                        Col("n_levels", kind="int"), Col("method", wrap=True)], rows, tid="variance-components",
                       csv="data/variance_components.csv"))
    text = ("Where the variance of score_norm comes from, per rubric: a linear mixed model (REML) with the "
            "lineage (combo ⊃ draft ⊃ essay) and the essay × evaluator interaction as random effects and the "
            "evaluators as fixed effects (their variance by moments). The per-essay spread tables below describe "
            "single essays; this is the decomposition. " + " ".join(readings))
    return [Section("Variance components", text, parts)]


VARIANCE = (("variance_models", "across evaluation models", "one rubric, each model's replicates averaged"),
            ("variance_rubrics", "across rubrics", "one evaluation model, on score_norm"),
            ("variance_replicates", "across replicates", "one evaluator and rubric: test-retest"))
AGREEMENT_ORDER = ["high", "moderate", "low", "n/a"]
UNIT = {"variance_models": "essay × rubric", "variance_rubrics": "essay × evaluation model",
        "variance_replicates": "essay × rubric × evaluation model"}


def agreement(c: Cohort) -> Page:
    ag = c.t["agreement"]
    rows = records(ag)
    _ci(rows, "icc2_1_ci_low", "icc2_1_ci_high", "icc_ci")
    _ci(rows, "icc3_1_ci_low", "icc3_1_ci_high", "icc3_ci")
    _ci(rows, "icc2_k_ci_low", "icc2_k_ci_high", "icc2k_ci")
    _ci(rows, "alpha_ci_low", "alpha_ci_high", "alpha_ci")
    _ci(rows, "mean_pearson_ci_low", "mean_pearson_ci_high", "r_ci")
    _ci(rows, "retest_icc2_1_ci_low", "retest_icc2_1_ci_high", "retest_ci")
    for r in rows:
        r["rubric"] = _rubric_label(c, r["evaluation_template"], r["scale_min"], r["scale_max"])
    sections = [Section("Inter-rater agreement per rubric",
                        "Between evaluation models, over the n_essays essays scored by every model (replicates "
                        "averaged). ICC(2,1): two-way random effects, absolute agreement, single rater: would one "
                        "model alone give the same scores? ICC(3,1): consistency: the same order, a constant offset "
                        "forgiven. ICC(2,k): absolute agreement of the mean of all the models. Their intervals are "
                        "analytic F intervals (McGraw & Wong 1996). Krippendorff's α (interval metric): the "
                        "essays scored by at least two models, interval by bootstrap over essays. Mean Pearson r: "
                        "over pairs of models, Fisher's z interval over essays. Retest ICC: replicates as raters "
                        "of each essay × model, each model's own mean removed (per model below). Classes after "
                        "Koo & Li (2016): < 0.5 poor, < 0.75 moderate, < 0.9 good, else excellent; "
                        "\"uncertain\" when fewer than 5 essays or the interval spans classes.",
                        [table([Col("rubric", "evaluation_template"), Col("n_raters", kind="int"),
                                Col("n_essays", kind="int", title="essays scored by every evaluation model (the n of ICC)"),
                                Col("icc2_1", "ICC(2,1)", kind="num"), Col("icc_ci", "ICC(2,1) 95% CI (F)"),
                                Col("icc_class"), Col("icc3_1", "ICC(3,1)", kind="num"),
                                Col("icc3_ci", "ICC(3,1) 95% CI (F)"), Col("icc2_k", "ICC(2,k)", kind="num"),
                                Col("icc2k_ci", "ICC(2,k) 95% CI (F)"), Col("alpha", "α", kind="num"),
                                Col("alpha_ci", "α 95% CI (bootstrap)"), Col("n_alpha_essays", kind="int"),
                                Col("mean_pearson", kind="num"), Col("r_ci", "r 95% CI (Fisher z)"),
                                Col("n_pearson_essays", kind="int"), Col("n_rater_pairs", kind="int"),
                                Col("retest_icc2_1", kind="num"), Col("retest_ci", "retest 95% CI (F)"),
                                Col("retest_class"), Col("n_retest_units", kind="int")], rows, tid="agreement",
                               csv="data/agreement.csv", empty="No rubric has scores yet.")])]
    rt = records(c.t["agreement_retest"]) if "agreement_retest" in c.t else []
    _ci(rt, "retest_icc2_1_ci_low", "retest_icc2_1_ci_high", "retest_ci")
    for r in rt:
        r["rubric"] = _rubric_label(c, r["evaluation_template"], r["scale_min"], r["scale_max"])
        r["evaluator"] = c.names.model(r["evaluation_llm"])
    if rt:
        sections.append(Section("Test-retest per evaluation model", "ICC(2,1) of one model's replicates on the "
                                "essays it scored every time. Models are not pooled: one model's bias would pass "
                                "for reliability.",
                                [table([Col("rubric", "evaluation_template"), Col("evaluator", "evaluation_llm"),
                                        Col("n_replicates", kind="int"), Col("n_essays", kind="int"),
                                        Col("retest_icc2_1", kind="num"), Col("retest_ci", "retest 95% CI (F)"),
                                        Col("retest_class")], rt, tid="agreement-retest",
                                       csv="data/agreement_retest.csv")]))
    sections += _variance_components(c)
    series, ranges, counted = {}, {}, []
    for name, label, _ in VARIANCE:
        v = c.t[name]
        defined = v[v["n"] >= 2] if len(v) else v
        counts = defined["agreement"].value_counts() if len(defined) else pd.Series(dtype=int)
        series[label] = [int(counts.get(k, 0)) for k in AGREEMENT_ORDER[:-1]]
        ranges[label] = defined["range_norm"].dropna().tolist() if len(defined) else []
        essays = defined["essay_gen_id"].nunique() if len(defined) else 0
        counted.append(f"{label}: {len(defined):,} units ({UNIT[name]}) from {essays:,} essays, "
                       f"{len(v) - len(defined):,} excluded with a single score")
    if any(sum(x) for x in series.values()):
        sections.append(Section("Agreement classes", "Per unit: the range of its scores as a share of the "
                                "rubric's scale. high ≤ 10%, moderate ≤ 25%, low above. Units with a single score "
                                "have no spread to judge and are excluded, not drawn as 0. " + "; ".join(counted) + ".", [
            chart(figures.bars(AGREEMENT_ORDER[:-1], series, title="Units by agreement class", y_title="units",
                               counts=True),
                  "agreement-classes"),
            chart(figures.histogram(ranges, title="Spread of scores (range as share of scale)",
                                    x_title="range_norm", bin_size=0.05), "agreement-ranges")]))
    for name, label, what in VARIANCE:
        v = c.t[name]
        worst = v[v["n"] >= 2].sort_values(["range_norm", "essay_gen_id"], ascending=[False, True]).head(25) \
            if len(v) else v
        rows = records(worst)
        cols = [Col("essay", "essay_gen_id")]
        for r in rows:
            r["essay"] = c.essay(r["essay_gen_id"])
            if "evaluation_template" in r:
                r["rubric"] = c.names.template("evaluation", r["evaluation_template"])
            if "evaluation_llm" in r:
                r["evaluator"] = c.names.model(r["evaluation_llm"])
        if "evaluation_template" in v.columns:
            cols.append(Col("rubric", "evaluation_template"))
        if "evaluation_llm" in v.columns:
            cols.append(Col("evaluator", "evaluation_llm"))
        cols += [Col("n", kind="int", title="scores compared in this unit"),
                 Col("mean", kind="num", title="mean of the unit's scores (raw score; score_norm across rubrics)"),
                 Col("std", kind="num"), Col("range", kind="num"),
                 Col("range_norm", kind="pct"), Col("cv", kind="num"), Col("agreement")]
        text = Markup("{}; the 25 widest spreads. Full table: {}.").format(what.capitalize(), _csv_link(name))
        sections.append(Section(f"Largest disagreement {label}", text,
                                [table(cols, rows, empty="Nothing to compare yet.", tid=name, csv=f"data/{name}.csv")]))
    return Page(f"cohorts/{c.id}/agreement.md", f"{c.id}: agreement and variance", "Agreement & variance",
                sections, c.simulated, lead="How consistent the scores are across models, rubrics and replicates.")


def quality(c: Cohort) -> Page:
    cov, iss, g = c.t["coverage"], c.t["issues"], c.t["generations"]
    cov_table = table([Col("stage"), Col("expected", kind="int"), Col("done", kind="int"), Col("stale", kind="int"),
                       Col("failed", kind="int"),
                       Col("pending", kind="int"), Col("coverage", kind="pct")], records(cov), sortable=False,
                      csv="data/coverage.csv")
    summary = iss.groupby(["stage", "issue"], sort=True).size().reset_index(name="n") if len(iss) else iss
    shown, note = iss, ""
    failed = g[g["status"] == "failed"] if len(g) else g
    fshown, fnote = failed, ""
    frows = records(fshown)
    for r in frows:
        r["template"] = c.names.template(r["stage"], r["template_id"])
        r["llm"] = c.names.model(r["llm_model_id"])
        r["gen"] = c.gen(r["stage"], r["gen_id"], r["parent_gen_id"])
    parent = dict(zip(g["gen_id"], g["parent_gen_id"])) if len(g) else {}
    irows = records(shown)
    for r in irows:
        r["gen"] = c.gen(r["stage"], r["gen_id"], parent.get(r["gen_id"]))
    return Page(f"cohorts/{c.id}/quality.md", f"{c.id}: data quality", "Data quality", [
        Section("Coverage per stage", "", [cov_table]),
        Section("Issues by kind", "Failures, missing files, broken lineage and catalog mismatches found while "
                "building the reports.", [table([Col("stage"), Col("issue"), Col("n", kind="int")], records(summary),
                                               empty="No issues found.", tid="issue-kinds")]),
        Section("Failed generations", "", [table(
            [Col("stage"), Col("gen", "gen_id"), Col("template", "template_id"), Col("llm", "llm_model_id"),
             Col("error"), Col("error_detail", wrap=True), Col("finish_reason")], frows,
            note=Markup(fnote) if fnote else "", empty="No failed generations.", tid="failed", csv="data/generations.csv")]),
        Section("Every issue", "", [table([Col("stage"), Col("gen", "gen_id"), Col("issue"), Col("detail", wrap=True)],
                                          irows, note=Markup(note) if note else "", empty="No issues found.", tid="issues",
                                          csv="data/issues.csv")]),
    ], c.simulated, lead="What is missing, failed or inconsistent in this cohort's data.")


def essay_index(c: Cohort) -> list[Page]:
    """The essay browser's index: every essay on one page, in cohort order."""
    lb = c.t["leaderboard"]
    g = c.t["generations"]
    order = [e for e in g.loc[g["stage"] == "essay", "gen_id"]] if len(g) else []
    lbr = {r["essay_gen_id"]: r for r in records(lb)}
    seen = set(order)
    order += [e for e in lbr if e not in seen and e in c.essay_ids]
    rows = []
    for eid in order:
        r = dict(lbr.get(eid) or {"essay_gen_id": eid})
        r["essay"] = c.essay(eid, prefix="")
        r["status"] = status_tag(r.get("essay_status"), "")
        rows.append(r)
    _lineage_cols(c, rows)
    tbl = table([Col("essay", "essay_gen_id"), Col("status", "essay_status"), Col("rank", kind="int"),
                 Col("mean", kind="num", title="mean score_norm (0–1)"), Col("n", kind="int"),
                 Col("expected", kind="int"), *LINEAGE_COLS], rows, empty="No essays in this cohort.", tid="essays",
                csv="../data/leaderboard.csv")
    return [Page(f"cohorts/{c.id}/essays/index.md", f"{c.id}: essays", "Essays", [
        Section("", f"All {len(order):,} essays, in cohort order (grouped by combo and draft). Each links to its "
                "page: concepts, lineage, draft, essay and every evaluation with the evaluator's reasoning.", [tbl])],
        c.simulated)]


def compare(c: Cohort) -> Page:
    """Any essays of the cohort side by side (``compare.html?e=<id>,<id>``): daydream.js loads
    each one's ``essays/<id>.js`` (a script, so it works from files) and shows texts, a word diff,
    every evaluator's score and reasoning, prompts and lineage."""
    ui = Markup(
        '<form class="dd-compare-form" id="dd-compare-form">\n'
        '<label for="dd-compare-add">Add an essay by id</label> '
        '<input id="dd-compare-add" name="add" placeholder="e_…" autocomplete="off" list="dd-compare-ids">\n'
        '<button type="submit">Add</button> <button type="button" id="dd-compare-clear">Clear</button>\n'
        '<datalist id="dd-compare-ids">{}</datalist>\n</form>\n'
        '<p class="dd-meta" id="dd-compare-status" role="status"></p>\n'
        '<div id="dd-compare" data-cohort="{}"></div>\n').format(
            Markup("").join(Markup('<option value="{}"></option>').format(e) for e in sorted(c.essay_ids)), c.id)
    return Page(f"cohorts/{c.id}/compare.md", f"{c.id}: compare essays", "Compare essays", [Section(
        "", Markup("Pick two or more essays (the <em>compare</em> toggle beside an essay on the leaderboard, the "
                   "score matrix, the essay list, search results or an essay's page), or add them by id here. The "
                   "address holds the picked essays, so a comparison can be shared."), [ui])], c.simulated,
        lead="Essays side by side: texts, word diff, every evaluator's score and reasoning, prompts and lineage.")


def rate(c: Cohort) -> Page:
    """The blind rating mode: the cohort's done essays in an order shuffled for each rater,
    without model, template or lineage, one rubric's text, a score and a note each; kept in the
    browser (localStorage) and exported as the CSV `daydream ratings import` reads."""
    g, s = c.t["generations"], c.t["scores"]
    done = g[(g["stage"] == "essay") & (g["status"] == "done")]["gen_id"].tolist() if len(g) else []
    essays = [e for e in dict.fromkeys(done) if e in c.essay_ids]
    rubrics = []
    if len(s):
        for t, grp in s.groupby("evaluation_template", sort=True):
            lo, hi = grp["scale_min"].dropna(), grp["scale_max"].dropna()
            if len(lo) and len(hi):
                rubrics.append({"id": str(t), "name": c.names.template("evaluation", t), "min": float(lo.iloc[0]),
                                "max": float(hi.iloc[0]), "text": c.names.template_text("evaluation", t) or ""})
    blob = script_json(json.dumps({"cohort": c.id, "essays": essays, "rubrics": rubrics}, ensure_ascii=False,
                                  separators=(",", ":")))
    ui = Markup('<div id="dd-rate" data-cohort="{}"></div>\n'
                '<script type="application/json" id="dd-rate-data">{}</script>\n').format(c.id, Markup(blob))
    body = ui if essays and rubrics else Markup('<p class="dd-empty">No scored essays to rate yet.</p>')
    return Page(f"cohorts/{c.id}/rate.md", f"{c.id}: rate blind", "Rate essays blind", [Section("", Markup(
        "Score essays yourself, blind: they come in an order shuffled for you, without model, template or "
        "scores. Your ratings stay in this browser until you export them as CSV; then "
        "<code>daydream ratings import FILE --rater NAME</code> adds them to the store as the evaluator "
        "<code>human:NAME</code>, and the rebuilt reports show you beside the LLM judges (agreement, paired "
        "differences, the leaderboard)."), [body])], c.simulated,
        lead="Human judgement beside the LLM judges.")


def cohort_pages(c: Cohort) -> list[Page]:
    """Every page of a cohort except its failures page (which needs the store, see ``failures``)."""
    out = [overview(c), leaderboard(c), factors(c), evaluators(c), rubrics(c), agreement(c), quality(c),
           *essay_index(c), *matrix(c), compare(c), rate(c)]
    return out + ([search_rounds(c)] if c.search else [])


# ---------------------------------------------------------------------------------------------
# The long table, the score matrix, the failures browser

LONG_USAGE = ("prompt_tokens", "completion_tokens", "cost_usd", "duration_s", "attempts", "finish_reason")


def long_table(c: Cohort) -> pd.DataFrame:
    """The cohort's long table: one row per evaluation with every factor of its lineage, its score
    and the usage of its model call (``cost_usd`` blank = unknown), plus display names."""
    s, g = c.t["scores"], c.t["generations"]
    if not len(s):
        return s
    usage = g.loc[g["stage"] == "evaluation", ["gen_id", *LONG_USAGE]].rename(columns={"gen_id": "evaluation_gen_id"}) \
        if len(g) else pd.DataFrame(columns=["evaluation_gen_id", *LONG_USAGE])
    out = s.merge(usage.drop_duplicates("evaluation_gen_id"), on="evaluation_gen_id", how="left")
    out["concepts"] = [c.concepts(x) for x in out["combo_id"]]
    for st in ("draft", "essay", "evaluation"):
        out[f"{st}_template_name"] = [c.names.template(st, x) for x in out[f"{st}_template"]]
        out[f"{st}_llm_name"] = [c.names.model(x) for x in out[f"{st}_llm"]]
    return out


HEAT_STEPS = 10               # colour classes of a matrix cell (dd-heat-0 … dd-heat-9, in daydream.css)


def heat_class(norm) -> str:
    """The colour class of a normalised score (0–1); none for a cell without a score."""
    if norm is None or (isinstance(norm, float) and math.isnan(norm)):
        return ""
    return f"dd-heat dd-heat-{min(HEAT_STEPS - 1, max(0, int(float(norm) * HEAT_STEPS)))}"


def _derived_id(essay: str, rubric: str, model: str, rep: object, gid: str) -> bool:
    """True when daydream.js can rebuild ``gid`` from the row's essay, the column and the
    replicate (``evaluationId``): then the page need not carry it. ASCII only, where Python's
    and JavaScript's lower-casing and trimming agree."""
    sig = "|".join(str(x) for x in (essay, rubric, model, rep))
    return sig.isascii() and evaluation_gen_id(essay, rubric, model, rep) == gid


def _matrix_cell(c: Cohort, essay_href: str, evals: list[dict], col_scale: str = "", essay: str = "") -> Cell:
    """One essay × (evaluator, rubric) cell: each replicate's score linking to its reasoning,
    failures as failures (with the reason), pending as pending. ``col_scale``: the column's
    scale, which the compact form leaves out where a replicate's is the same. The compact form
    sends 0 for an evaluation id the page rebuilds from ``essay``, the column and the replicate
    (most of a large matrix's bytes were ids), the id itself otherwise."""
    links, norms, compact = [], [], []
    for v in evals:
        href = f"{essay_href}#{v['evaluation_gen_id']}"
        gid = str(v["evaluation_gen_id"])
        rep = v["evaluation_replicate"]
        rep = int(rep) if (isinstance(rep, (int, float)) and float(rep).is_integer()) or (
            isinstance(rep, str) and rep.isascii() and rep.isdigit() and str(int(rep)) == rep) else str(rep)
        short = bool(essay) and _derived_id(essay, v["evaluation_template"], v["evaluation_llm"], rep, gid)
        ref = 0 if short else gid
        if v["status"] == "done" and v.get("score") is not None:
            norms.append(float(v["score_norm"]))
            scale = f"{score(v['scale_min'])}–{score(v['scale_max'])}"
            links.append(Markup('<a href="{}" title="replicate {}: {} on {}">{}</a>').format(
                href, v["evaluation_replicate"], score(v["score"]), scale, score(v["score"])))
            compact.append([ref, score(v["score"]), rep] + ([] if scale == col_scale else [scale]))
        else:
            if v["status"] == "failed":
                links.append(Markup('<a class="dd-fail" href="{}" title="{}">✗ {}</a>').format(
                    href, v.get("error_detail") or "", v.get("error") or "failed"))
                e = [ref, f"✗ {v.get('error') or 'failed'}", str(v.get("error_detail") or ""), "f"]
            elif v["status"] == "stale":  # its score is not current: shown, but not as a score
                links.append(Markup('<a class="dd-pending" href="{}" title="{}">stale</a>').format(
                    href, v.get("error_detail") or ""))
                e = [ref, "stale", str(v.get("error_detail") or ""), "p"]
            else:
                links.append(Markup('<a class="dd-pending" href="{}" title="{}">pending</a>').format(
                    href, v.get("error_detail") or ""))
                e = [ref, "pending", str(v.get("error_detail") or ""), "p"]
            compact.append(e + ([rep] if short else []))
    mean = sum(norms) / len(norms) if norms else None
    # compact form for a data table: the replicates and the sort key (the colour follows from it);
    # the page links each to the row's essay (daydream.js)
    data = {"m": compact, "s": "" if mean is None else float(f"{mean:.6g}")}
    return Cell(Markup(" · ").join(links), sort="" if mean is None else f"{mean:.6g}", cls=heat_class(mean), data=data)


def matrix_columns(c: Cohort) -> list[tuple[str, str]]:
    """The score matrix's (evaluation_llm, evaluation_template) columns, by display name: column
    ``m<i>`` of the matrix table is the i-th."""
    s = c.t["scores"]
    cols = list(dict.fromkeys(zip(s["evaluation_llm"], s["evaluation_template"]))) if len(s) else []
    return sorted(cols, key=lambda mt: (c.names.model(mt[0]), c.names.template("evaluation", mt[1])))


def matrix(c: Cohort) -> list[Page]:
    """Essays × (evaluator, rubric), best essay first: every evaluation's score in its cell.

    One page: a large matrix travels as compact data that the browser filters, sorts and pages
    over (render.table)."""
    s, lb = c.t["scores"], c.t["leaderboard"]
    cols = matrix_columns(c)
    by_essay: dict[str, dict[tuple, list[dict]]] = {}
    for r in records(s) if len(s) else []:
        by_essay.setdefault(r["essay_gen_id"], {}).setdefault((r["evaluation_llm"], r["evaluation_template"]), []).append(r)
    for cells in by_essay.values():
        for lst in cells.values():
            lst.sort(key=lambda v: str(v["evaluation_replicate"]))
    order = [e for e in (lb["essay_gen_id"] if len(lb) else []) if e in by_essay]
    order += [e for e in by_essay if e not in set(order)]
    lbr = {r["essay_gen_id"]: r for r in records(lb)} if len(lb) else {}
    keys = [f"m{i}" for i in range(len(cols))]
    mcols = [Col("essay", "essay_gen_id"), Col("rank", kind="int"),
             Col("mean", kind="num", title="mean score_norm over the essay's cells"), Col("ci", "95% CI"),
             Col("n_cells", kind="int"), Col("status", "evaluations",
                                              title="done when every evaluation is scored; else how many failed or are pending",
                                              filter="select")]
    mcols += [Col(k, f"{c.names.model(m)} · {c.names.template('evaluation', t)}", filter="",
                  title=f"evaluation_llm {m} · evaluation_template {t}: each replicate's score (raw, on the rubric's "
                        "scale); colour: mean score_norm") for k, (m, t) in zip(keys, cols)]
    mcols += [Col("draft_template_name", "draft_template"), Col("draft_llm_name", "draft_llm"),
              Col("essay_template_name", "essay_template"), Col("essay_llm_name", "essay_llm"),
              Col("concepts", wrap=True)]
    scales = {}
    for r in records(s) if len(s) else []:
        scales.setdefault((r["evaluation_llm"], r["evaluation_template"]),
                          f"{score(r['scale_min'])}–{score(r['scale_max'])}")
    rows = []
    for eid in order:
        r = dict(lbr.get(eid) or {"essay_gen_id": eid})
        r["essay"] = c.essay(eid)
        r["ci"] = interval(r.get("ci_low"), r.get("ci_high"))
        evs = [v for lst in by_essay[eid].values() for v in lst]
        failed = sum(v["status"] == "failed" for v in evs)
        stale = sum(v["status"] == "stale" for v in evs)
        pending = sum(v["status"] not in ("done", "failed", "stale") for v in evs)
        r["status"] = ", ".join(x for x in (f"{failed} failed" if failed else "",
                                            f"{stale} stale" if stale else "",
                                            f"{pending} pending" if pending else "") if x) or "done"
        href = f"essays/{eid}.html" if eid in c.essay_ids else ""
        for k, mt in zip(keys, cols):
            r[k] = _matrix_cell(c, href, by_essay[eid].get(mt, []), scales[mt], eid if href else "") \
                if mt in by_essay[eid] \
                else Cell("", cls="dd-none", data={"m": [], "s": ""})
        rows.append(r)
    _lineage_cols(c, rows)
    # whether each row's essay has a page for its cells to link to (1: the essay id is the row's
    # first cell's text, "" = no page), each matrix column's scale, and its (evaluation_llm,
    # evaluation_template) for the page to rebuild evaluation ids (by column index)
    assert mcols[0].key == "essay"
    essays = [1 if e in c.essay_ids else "" for e in order]
    first = [col.key for col in mcols].index(keys[0]) if keys else 0
    tbl = table(mcols, rows, empty="No evaluations in this cohort.", tid="matrix", csv="data/long.csv",
                extra={"e": essays, "sc": {str(first + i): scales[mt] for i, mt in enumerate(cols)},
                       "ev": {str(first + i): list(mt) for i, mt in enumerate(cols)}})
    return [Page(f"cohorts/{c.id}/matrix.md", f"{c.id}: score matrix", "Score matrix", [Section("", Markup(
        "Every essay (rows, best mean first) against every evaluation model · rubric (columns). A cell "
        "lists each replicate's score on the rubric's own scale and links to that evaluation's "
        "reasoning; its colour is the replicates' mean score_norm (light = low, dark = high). "
        "✗ marks a failed evaluation (hover for the reason), <em>stale</em> one made from inputs "
        "since changed, <em>pending</em> one not run yet: none counts as a score. Click a header to sort; filter with the boxes above the table: "
        "they filter, sort and page over all {} essays.").format(f"{len(order):,}"), [tbl])], c.simulated,
        lead="The promptfoo view: essays × evaluators, one score per cell, each a link to its reasoning.")]


def failure_rows(c: Cohort) -> list[dict]:
    """Generation rows the failures browser lists: every failed one (an ambiguous score is a
    failed parse whose reason says so), up to ``ROW_CAP``."""
    g = c.t["generations"]
    if not len(g):
        return []
    bad = g[(g["status"] == "failed") | g["error_detail"].fillna("").str.contains("ambiguous", case=False)]
    return records(bad.head(ROW_CAP))


def failures(c: Cohort, rows: list[dict], tails: dict[str, str], published: dict[str, list[str]]) -> Page:
    """The failures browser: each failed or ambiguous generation with its reason, the tail of
    its response and links to its files (``published``: file names copied under ``files/``)."""
    g = c.t["generations"]
    total = int((g["status"] == "failed").sum()) if len(g) else 0
    shown = []
    for r in rows:
        r = dict(r)
        gid = str(r["gen_id"])
        r["gen"] = c.gen(r["stage"], gid, r["parent_gen_id"])
        r["template"] = c.names.template(r["stage"], r["template_id"])
        r["llm"] = c.names.model(r["llm_model_id"])
        r["kind"] = "ambiguous score" if "ambiguous" in str(r.get("error_detail") or "").lower() else r["error"]
        tail = tails.get(gid, "")
        r["tail"] = Markup('<pre class="dd-tail">{}</pre>').format(tail) if tail else Markup('<span class="dd-empty">none</span>')
        r["files"] = Markup("<br>").join(Markup('<a href="files/{}/{}/{}">{}</a>').format(r["stage"], gid, n, n)
                                      for n in published.get(gid, [])) or Markup('<span class="dd-empty">none on disk</span>')
        shown.append(r)
    note = f"Showing the first {ROW_CAP:,} of {total:,} failed generations." if total > len(rows) else ""
    # what failed and why first: names can be long and would push the reason off screen
    tbl = table([Col("stage"), Col("gen", "gen_id"), Col("kind", "error", filter="select"),
                 Col("error_detail", "reason", wrap=True), Col("tail", "raw tail"), Col("files"),
                 Col("template", "template_id", filter="select", wrap=True), Col("llm", "llm_model_id", filter="select", wrap=True),
                 Col("finish_reason"), Col("attempts", kind="int")],
                shown, empty="No failed or ambiguous generation in this cohort.", tid="failures", csv="data/generations.csv",
                note=note)
    return Page(f"cohorts/{c.id}/failures.md", f"{c.id}: failures", "Failures", [
        Section("", "Every failed generation (truncated, empty or too short, unparseable, ambiguous or out-of-scale "
                "score, provider error) with the recorded reason, the end of the model's response and its files "
                "as they are in the store (prompt, raw response, metadata), published with the site. A failure is "
                "never a score of 0: it only lowers coverage. The next run retries it.", [tbl])],
        c.simulated, lead=f"{total:,} failed generations.")


def search_page(index_files: list[str], simulated: bool) -> Page:
    return Page("search.md", "Search", "Search", [Section(parts=[search_ui(index_files)])], simulated,
                lead="Whole essays, drafts, evaluators' reasoning, concepts, ids and every page's text; from a "
                     "server or opened as files.")


# ---------------------------------------------------------------------------------------------
# Site pages


def home(cohorts: list[Cohort]) -> Page:
    rows = []
    for c in cohorts:
        cov = {r["stage"]: r for r in records(c.t["coverage"])}
        lb = c.t["leaderboard"]
        scored = lb[lb["mean"].notna()] if len(lb) else lb
        mean, lo, hi, n, method = (None,) * 3 + (0, "")
        if len(scored):  # essays sharing a draft or combo are not independent: t over the highest shared level
            level, clusters = lineage_clusters(scored)
            ci = t_cluster_mean(scored["mean"].to_numpy(dtype=float), clusters, level)
            mean, lo, hi, method = ci["estimate"], ci["ci_low"], ci["ci_high"], ci["ci_method"]
            n = len(scored)
        rows.append({
            "cohort": Link(c.id, f"cohorts/{c.id}/index.html", code=True),
            "essays": cov.get("essay", {}).get("expected"), "evaluations": cov.get("evaluation", {}).get("expected"),
            "coverage": cov.get("evaluation", {}).get("coverage"),
            "mean": mean, "ci": interval(lo, hi), "ci_method": method, "n_ranked": n,
            "cost_usd": _known_sum(r.get("cost_usd") for r in cov.values()) if cov else None,
            "simulated": "yes" if c.simulated else "no",
        })
    tbl = table([Col("cohort", "cohort_id"), Col("essays", kind="int"), Col("evaluations", kind="int"),
                 Col("coverage", "evaluation coverage", kind="pct"),
                 Col("mean", "mean score_norm", kind="num", title="mean of the essays' means (each essay weighs the same)"),
                 Col("ci", "95% CI", title="t interval over the essays' highest shared lineage clusters"),
                 Col("ci_method", "method"),
                 Col("n_ranked", "essays scored", kind="int", title="n for the mean and its interval"),
                 Col("cost_usd", kind="usd"), Col("simulated")], rows, empty="No cohort has reports yet.", tid="cohorts")
    return Page("index.md", "Cohorts", "daydream reports", [
        Section("Cohorts", "", [tbl]),
        Section("Across cohorts", Markup('Essays evaluated in more than one cohort are compared on the '
                                         '<a href="cross-cohort.html">cross-cohort page</a>.')),
        Section("Reading these pages", Markup(
            "Each cohort has an overview, a leaderboard, charts of generation factors, evaluator heatmaps, a rubric "
            "comparison, agreement statistics, an essay browser, a score matrix (every essay against every "
            "evaluator and rubric, each score a link to its reasoning), a failures browser and a data quality page. "
            "Every table filters and sorts (the filter stays in the address, to share a view) and downloads as CSV; "
            '<a href="search.html">search</a> covers whole essays, drafts, reasoning and ids. {}').format(NORM_NOTE)),
    ], any(c.simulated for c in cohorts), lead="Idea-generation experiments: drafts from concept combinations, "
       "expanded into essays, scored by evaluation models with rubrics.")


def cross_cohort(df: pd.DataFrame | None, cohorts: list[Cohort], names: Names) -> Page:
    by_id = {c.id: c for c in cohorts}
    if df is None:
        body = [Markup('<p class="dd-empty">No cross-cohort table (data/reports/cross_cohort.csv) has been '
                       'built yet.</p>')]
        simulated = any(c.simulated for c in cohorts)
    else:
        simulated = any(by_id[x].simulated for x in set(df["cohort_id"]) if x in by_id) if len(df) else False
        body = []
        if len(df):
            top = (df.groupby("essay_gen_id")["delta"].apply(lambda x: x.abs().max())
                   .sort_values(ascending=False).head(30).index.tolist())
            sub = df[df["essay_gen_id"].isin(top)]
            series = {cid: [sub[(sub["essay_gen_id"] == e) & (sub["cohort_id"] == cid)]["mean"].mean() for e in top]
                      for cid in sorted(set(sub["cohort_id"]))}
            body.append(chart(figures.bars(top, series, title="Shared essays with the largest differences",
                                           y_title="mean score_norm", y_range=(0, 1)), "cross-cohort",
                              "Mean score_norm of each shared essay in each cohort (up to 30 essays)."))
        shown, note = df, ""
        rows = records(shown)
        _ci(rows)
        _ci(rows, "delta_ci_low", "delta_ci_high", "delta_ci")
        for r in rows:
            c = by_id.get(r["cohort_id"])
            r["essay"] = c.essay(r["essay_gen_id"], prefix=f"cohorts/{c.id}/essays/") if c else r["essay_gen_id"]
            r["cohort"] = Link(r["cohort_id"], f"cohorts/{r['cohort_id']}/index.html", code=True) if c else r["cohort_id"]
            r["essay_template_name"] = names.template("essay", r["essay_template"])
            r["essay_llm_name"] = names.model(r["essay_llm"])
            r["rubric_names"] = ", ".join(names.template("evaluation", t) for t in str(r["rubrics"] or "").split(";") if t)
            r["evaluator_names"] = ", ".join(names.model(m) for m in str(r["evaluators"] or "").split(";") if m)
        body.append(table([Col("essay", "essay_gen_id"), Col("cohort", "cohort_id"), Col("n_cohorts", kind="int"),
                           Col("essay_template_name", "essay_template"), Col("essay_llm_name", "essay_llm"),
                           Col("n_cells", kind="int"), Col("n", "n evaluations", kind="int"),
                           Col("mean", kind="num", title="mean score_norm over the essay's cells in this cohort"),
                           Col("ci", "95% CI (t over cells)", title="95% t interval of the mean, over cells; blank "
                               "when the cells agree exactly (no spread to estimate)"),
                           Col("std", "std (cells)", kind="num"),
                           Col("mean_across_cohorts", kind="num"), Col("delta", kind="num"),
                           Col("delta_ci", "delta 95% CI", title="95% t interval of delta; a delta whose interval "
                               "includes 0 is within noise"),
                           Col("rubric_names", "rubrics", wrap=True), Col("evaluator_names", "evaluators", wrap=True)], rows, note=Markup(note) if note else "",
                          empty="No essay is evaluated in more than one cohort.", tid="cross", csv="data/cross_cohort.csv"))
    return Page("cross-cohort.md", "Cross-cohort", "Across cohorts", [
        Section("", "Essays evaluated in two or more cohorts. delta = this cohort's mean − the mean of the "
                "cohorts' means (score_norm): a cohort whose rubrics or evaluators rate a shared essay "
                "differently stands out. Means and deltas carry 95% t intervals over the essay's cells (a cell is "
                "one evaluation model × rubric, replicates averaged); a delta whose interval includes 0 is "
                "within noise.", body)], simulated)


# ---------------------------------------------------------------------------------------------
# Search cohorts


def _search_combo(c: Cohort, concepts: str) -> str:
    """A combo's concepts by name (``concepts`` is ``;``-joined ids, as the search tables hold them)."""
    return " · ".join(c.names.concept(x) for x in str(concepts or "").split(";") if x)


def search_rounds(c: Cohort) -> Page:
    """A search cohort's rounds: why it stopped, each confirmation (the selection's estimate beside
    the fresh drafts'), the best score per round with its interval, the combos of each round (kept
    or dropped, with n and interval) and the best combos' essays."""
    rounds, summary = c.search["search_rounds"], c.search["search_summary"]
    s0 = summary.iloc[0]
    status = (f"Stopped: {s0['stop_reason']}." if s0["search_status"] == "stopped"
              else f"Running round {int(summary['round'].max())}.")
    lead = Markup("{} {} of {} combos tried; {} of {} generations of the full factorial ({}).").format(
        status, num(s0["combos_tried"], 0), num(s0["combos_full_factorial"], 0), num(s0["generations"], 0),
        num(s0["generations_full_factorial"], 0), pct(s0["generations_ratio"]))
    t_note = ("Intervals: Student t over the combo's drafts' mean scores (a draft's essays and evaluations "
              "share it), blank when not estimable (one draft, or drafts that all score the same).")
    srows = records(summary)
    for r in srows:
        r["best"] = _search_combo(c, r["best_concepts"])
        r["ci"] = interval(r["best_ci_low"], r["best_ci_high"])
    per_round = table([Col("round", kind="int"), Col("k", kind="int", title="concepts per combo"),
                       Col("status"), Col("combos", kind="int"), Col("best", "best combo", wrap=True),
                       Col("best_value", "value", kind="num", title="the selection statistic of the round's best combo"),
                       Col("best_mean", "mean", kind="num"), Col("ci", "95% CI (t)", title=t_note),
                       Col("calls", kind="int", title="model calls the round's generations take"),
                       Col("calls_made", kind="int", title="model calls recorded in the store"),
                       Col("confirm_calls", "confirmation calls", kind="int",
                           title="model calls of the round's confirmation on fresh drafts"),
                       Col("cumulative_calls", kind="int"), Col("cost_usd", kind="usd")],
                      srows, sortable=False, tid="search_summary", csv="data/search_summary.csv")
    labels = [f"round {int(r['round'])} (k={int(r['k'])})" for r in srows]
    best = chart(figures.bars(labels, {"best mean": [r["best_mean"] for r in srows]},
                              title="best combo's mean score_norm per round", y_title="mean score_norm (0–1)",
                              intervals={"best mean": ([r["best_ci_low"] for r in srows],
                                                       [r["best_ci_high"] for r in srows])},
                              y_range=(0, 1)),
                 "search-best", "Whiskers: the 95% t interval over the combo's drafts' means.")
    sections = [Section("Rounds", "Each round's best combo and what the round cost. " + t_note, [per_round, best])]
    all_rows = records(rounds)
    concepts_of = {r["combo_id"]: _search_combo(c, r["concepts"]) for r in all_rows}
    for r in all_rows:
        r["combo"] = concepts_of[r["combo_id"]]
        r["grew_from"] = Markup("<br>").join(concepts_of.get(p, p) for p in str(r.get("parents") or "").split(";") if p)
        r["ci"] = interval(r["ci_low"], r["ci_high"]) or ("not estimable" if not is_blank(r.get("not_estimable")) else "")
        r["kept_mark"] = "kept" if str(r["kept"]).lower() == "true" else "dropped"
        essays = [e for e in str(r.get("essay_gen_ids") or "").split(";") if e]
        r["essay"] = c.essay(essays[0]) if essays else ""
    confirmed = [r for r in all_rows if not is_blank(r.get("confirm_number"))]
    for r in confirmed:
        r["level"] = f"{float(r['confirm_level']) * 100:g}%"
        r["confirm_ci"] = interval(r["confirm_ci_low"], r["confirm_ci_high"]) or "not estimable"
        r["outcome"] = ("running" if r["confirm_status"] == "running"
                        else "target reached" if str(r["confirmed"]).lower() == "true" else "not reached")
        fresh = [e for e in str(r.get("confirm_essay_gen_ids") or "").split(";") if e]
        r["confirm_essay"] = c.essay(fresh[0]) if fresh else ""
    target = None if is_blank(s0.get("target")) else num(s0["target"])
    sections.insert(0, Section(
        "Confirmations",
        Markup("A target is never claimed on the scores that selected a combo: the best of many noisy combos "
               "looks better than it is. When a kept combo's mean reaches the target ({}), the combo is written "
               "and scored again on fresh draft replicates, and the search stops only if the lower bound of the "
               "t interval over those fresh drafts alone reaches the target. Each later confirmation of a search "
               "needs a stricter bound (95%, then 97.5%, 98.75%, …), so a search with no combo truly at the "
               "target claims it at most 5% of the time.").format(target),
        [table([Col("round", kind="int"), Col("combo", "concepts", wrap=True),
                Col("n_drafts", "selection drafts", kind="int"), Col("mean", "selection mean", kind="num"),
                Col("ci", "selection 95% CI (t)", title=t_note),
                Col("confirm_n_drafts", "fresh drafts", kind="int"), Col("confirm_mean", "fresh mean", kind="num"),
                Col("level", "level", title="the two-sided level of the fresh drafts' interval"),
                Col("confirm_ci", "fresh CI (t)", title="the t interval at that level over the fresh drafts only"),
                Col("outcome"), Col("confirm_verdict", "why", wrap=True), Col("confirm_essay", "best fresh essay")],
               confirmed, sortable=False, tid="search_confirmations",
               empty="No kept combo's mean has reached the target: nothing to confirm.")]))
    if target is None:  # a search without a target confirms nothing
        sections.pop(0)
    best_at = 2 if target is not None else 1
    for rnd in sorted({int(r["round"]) for r in all_rows}):
        rows_r = sorted((r for r in all_rows if int(r["round"]) == rnd),
                        key=lambda r: (r["rank"] if not is_blank(r["rank"]) else math.inf, str(r["combo_id"])))
        kept = sum(1 for r in rows_r if r["kept_mark"] == "kept")
        sections.append(Section(
            f"Round {rnd}: {len(rows_r)} combos, {kept} kept",
            "Ranked by the selection statistic (ties by combo id); a kept combo grows by one concept in the next "
            "round. A combo without a value of ci_low is not ranked by it (not estimable).",
            [table([Col("rank", kind="int"), Col("combo", "concepts", wrap=True), Col("kept_mark", "kept"),
                    *([Col("grew_from", "grew from", wrap=True, title="the kept combos of the round before that "
                                                                      "this one adds a concept to")] if rnd else []),
                    Col("n", kind="int"), Col("n_essays", kind="int"), Col("n_drafts", kind="int"),
                    Col("mean", kind="num"), Col("ci", "95% CI (t)", title=t_note),
                    Col("value", kind="num", title="the selection statistic"), Col("status"),
                    Col("calls_made", kind="int"), Col("essay", "best essay")],
                   rows_r, tid=f"search_round_{rnd}", csv="data/search_rounds.csv")]))
    scored = [r for r in all_rows if not is_blank(r["value"])]
    top = sorted(scored, key=lambda r: (-float(r["value"]), str(r["combo_id"])))[:BEST_COMBOS]
    sections.insert(best_at, Section(
        "Best combos", "Over every round, by the selection statistic (ties by combo id), with the combo's best "
                       "essay. These are selection estimates: only a confirmation on fresh drafts claims a target.",
        [table([Col("combo", "concepts", wrap=True), Col("round", kind="int"), Col("n", kind="int"),
                Col("n_drafts", kind="int"), Col("mean", kind="num"), Col("ci", "95% CI (t)", title=t_note),
                Col("value", kind="num", title="the selection statistic"), Col("essay", "best essay")],
               top, sortable=False, tid="search_best", empty="No combo is scored yet.")]))
    return Page(f"cohorts/{c.id}/search.md", f"{c.id}: search", "Search rounds", sections, c.simulated, lead=lead)
