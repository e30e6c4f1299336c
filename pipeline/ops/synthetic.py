"""A complete, realistic, fully simulated data root for tests and benchmarks.

Reports and the site need data with the shape of a real run (shared drafts, copy-mode essays,
replicates, mixed score scales, failures, pending work, hostile model output) without running the
pipeline. Everything written here follows docs/architecture.md and goes through the atomic writer.
Scores have structure (essay quality shared across evaluators, evaluator and rubric biases, noise)
so pivots and agreement statistics show something. All values are deterministic in ``seed`` and
the gen_id, so two cohorts built on one root share the same essays and agree on shared files.

Every file goes through the atomic writer (an fsync each), and 10,000 evaluations are about
70,000 files: a big synthetic root belongs on /dev/shm, where an fsync costs next to nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

from pipeline import ids
from pipeline.store import (DataPaths, atomic_write_csv, atomic_write_json, atomic_write_text, dumps_json, generation_metadata,
                            join_cohort, parsed_metadata,
                            raw_metadata, read_text)

# Concepts written for this project: (id, name, paragraph description).
CONCEPTS = [
    ("tidal-memory", "Tidal memory",
     "Coastal communities keep records in the timing of tides; knowledge that returns on a schedule rather than being stored once."),
    ("slow-feedback", "Slow feedback",
     "Systems whose consequences arrive years after the decision, so learning has to happen before the evidence does."),
    ("borrowed-tools", "Borrowed tools",
     "Instruments built for one field that quietly reshape another, such as the telescope in navigation or statistics in biology."),
    ("edge-repair", "Edge repair",
     "Maintenance done by the people at the margins of a system, who see failures long before the centre does."),
    ("quiet-consensus", "Quiet consensus",
     "Agreement that forms without debate because nobody thought to question an assumption."),
    ("seed-banks", "Seed banks",
     "Deliberate stores of variety kept for a future whose needs are unknown."),
    ("cheap-verification", "Cheap verification",
     "Domains where checking an answer costs far less than finding it, which changes who can contribute."),
    ("night-shifts", "Night shifts",
     "Work that happens while the rest of the organisation sleeps, with its own habits and blind spots."),
    ("map-drift", "Map drift",
     "The slow divergence between a description of a system and the system itself."),
    ("apprentice-loops", "Apprentice loops",
     "Skills passed on by doing alongside someone, which resist being written down."),
    ("surplus-attention", "Surplus attention",
     "Capacity left over after routine work, and what people do with it when nobody is watching."),
    ("fault-lines", "Fault lines",
     "Places where two structures meet and stress accumulates until it is released all at once."),
]

DRAFT_TEMPLATES = [("draft-brainstorm", "Brainstorm", "Loose list of connections between the concepts"),
                   ("draft-structured", "Structured outline", "Thesis, mechanism and test for one idea")]
ESSAY_TEMPLATES = [("essay-expand", "Expand", "Turn the draft into a short essay", "essay_block", "llm"),
                   ("essay-copy", "Copy", "Use the draft as the essay", "identity", "copy")]
WRITERS = ("sim-writer-1", "sim-writer-2")
# Each draft gets these essays, in this order: (essay template, essay model or None for copy).
ESSAY_VARIANTS = (("essay-expand", "sim-writer-1"), ("essay-expand", "sim-writer-2"), ("essay-copy", None))
BASE_TIME = datetime(2026, 11, 24, 19, 0, 0, tzinfo=timezone.utc)

HOSTILE = (
    "<script>alert(1)</script> and <img src=x onerror=alert(2)>\n"
    "# Not a heading * not a list _ not emphasis [x](javascript:alert(1)) | a | table |\n"
    "---\n{{ not_jinja }} {% raw %} </pre></textarea></code> &amp; &lt;b&gt;\n"
)

SCORE_FORMATS = ("SCORE: {s}", "**SCORE:** {s}", "Score: {s}", "Final Score: {s}/{hi}", "Total Score: {s}/{hi}",
                 "## Final score\n**{s}**")


def _h(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (stable across processes, unlike hash())."""
    d = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(d, "big") / 2**64


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _merge_csv(path: Path, key: tuple[str, ...] | str, columns: list[str], rows: list[dict]) -> None:
    """Write catalog rows, keeping rows of an existing file whose keys we do not define."""
    key = (key,) if isinstance(key, str) else key
    merged: dict[tuple, dict] = {}
    text = read_text(path, authored=True)
    if text:
        for r in csv.DictReader(io.StringIO(text)):
            merged[tuple(r[k] for k in key)] = r
    for r in rows:
        merged[tuple(str(r[k]) for k in key)] = r
    atomic_write_csv(path, columns, [merged[k] for k in sorted(merged)])


def _write_catalog(paths: DataPaths, combos: list[tuple[str, tuple[str, ...], int]],
                   models: list[str], rubrics: Iterable[tuple[str, float, float]]) -> None:
    for cid, name, desc in CONCEPTS:
        atomic_write_text(paths.concept_description("paragraph", cid), desc + "\n")
        atomic_write_text(paths.concept_description("sentence", cid), desc.split(",")[0].rstrip(".") + ".\n")
    _merge_csv(paths.catalog_csv("concepts_metadata.csv"), "concept_id", ["concept_id", "name"],
               [{"concept_id": c, "name": n} for c, n, _ in CONCEPTS])

    cols = ["template_id", "template_name", "description", "parser", "generator"]
    _merge_csv(paths.catalog_csv("draft_templates.csv"), "template_id", cols,
               [dict(zip(cols, (t, n, d, "identity", "llm"))) for t, n, d in DRAFT_TEMPLATES])
    for t, _, d in DRAFT_TEMPLATES:
        atomic_write_text(paths.template_file("draft", t),
                          f"{d}.\n{{% for c in concepts %}}- {{{{ c.name }}}}: {{{{ c.content }}}}\n{{% endfor %}}")
    _merge_csv(paths.catalog_csv("essay_templates.csv"), "template_id", cols,
               [dict(zip(cols, row)) for row in ESSAY_TEMPLATES])
    for t, _, d, _, gen in ESSAY_TEMPLATES:
        if gen == "llm":
            atomic_write_text(paths.template_file("essay", t),
                              f"{d}. Answer inside <essay></essay>.\n\n{{{{ draft_block }}}}\n")
    ecols = cols + ["score_min", "score_max"]
    rows = []
    for t, lo, hi in rubrics:
        rows.append(dict(zip(ecols, (t, t.replace("-", " ").title(), f"Rate the essay from {_fmt(lo)} to {_fmt(hi)}",
                                     "score", "llm", _fmt(lo), _fmt(hi)))))
        atomic_write_text(paths.template_file("evaluation", t),
                          f"Rate this essay on {t} from {_fmt(lo)} to {_fmt(hi)}. End with 'SCORE: <n>'.\n\n"
                          "{{ response }}\n")
    _merge_csv(paths.catalog_csv("evaluation_templates.csv"), "template_id", ecols, rows)

    mcols = ["id", "model", "provider", "display_name", "temperature", "max_tokens",
             "input_price_per_mtok", "output_price_per_mtok"]
    _merge_csv(paths.catalog_csv("llm_models.csv"), "id", mcols, [
        dict(zip(mcols, (m, f"offline/{m}", "offline", f"Simulated {m[4:]}", "0.7", "4096",
                         f"{0.5 + 2 * _h('in', m):.2f}", f"{2 + 8 * _h('out', m):.2f}")))
        for m in models])
    _merge_csv(paths.catalog_csv("combo_mappings.csv"), ("combo_id", "concept_id"),
               ["combo_id", "concept_id", "description_level", "k"],
               [{"combo_id": c, "concept_id": x, "description_level": "paragraph", "k": k}
                for c, cs, k in combos for x in cs])


def _combos(n: int) -> list[tuple[str, tuple[str, ...], int]]:
    """The first ``n`` combos: every 3-subset of CONCEPTS, then 4-subsets, then 5-subsets."""
    out = []
    for k in (3, 4, 5):
        for cs in itertools.combinations([c[0] for c in CONCEPTS], k):
            if len(out) == n:
                return out
            out.append((ids.combo_id(cs, "paragraph", k), cs, k))
    if len(out) < n:
        raise ValueError(f"synthetic data supports at most {len(out) * 12} essays")
    return out


class _Writer:
    """Writes one generation's files; holds the per-model prices and the running clock."""

    def __init__(self, paths: DataPaths, cohort_id: str, prices: dict[str, tuple[float, float]]):
        from pipeline.design.catalog import load_catalog
        from pipeline.run.generation import Runtime

        self.paths, self.cohort_id, self.prices, self.n = paths, cohort_id, prices, 0
        # the catalog as just written: outcomes record the fingerprint of the inputs the
        # classifier renders, so a synthetic store is done, failed or pending exactly as a run's
        self.rt = Runtime(paths, load_catalog(paths))

    def inputs(self, stage: str, gen_id: str):
        from pipeline.run.generation import resolve_inputs

        return resolve_inputs(self.rt, stage, gen_id)

    def exists(self, stage: str, gen_id: str) -> bool:
        """Outputs already there (another cohort produced them): keep them, as the pipeline would."""
        return self.paths.gen_file(stage, gen_id, "raw_metadata.json").exists()

    def metadata(self, stage, gen_id, template_id, model, replicate, mode, parent, combo, sig_parent,
                 concept_ids=None):
        join_cohort(self.paths, generation_metadata(
            stage=stage, gen_id=gen_id, template_id=template_id, llm_model_id=model, replicate=replicate, mode=mode,
            combo_id=combo, parent_gen_id=parent, cohorts=[self.cohort_id],
            signature=ids.signature(stage, parent=sig_parent, template_id=template_id, model_id=model,
                                    replicate=replicate),
            # a draft's prompt is rendered from its combo's concepts
            combo=None if concept_ids is None else {"concept_ids": list(concept_ids), "level": "paragraph",
                                                     "k": len(concept_ids)}))

    def raw(self, stage, gen_id, model, mode, prompt, raw, *, valid=True, reason=None, truncated=False):
        self.n += 1
        fp = self.paths.gen_file
        atomic_write_text(fp(stage, gen_id, "prompt.txt"), prompt)
        atomic_write_text(fp(stage, gen_id, "raw.txt"), raw)
        pt, ct = (0, 0) if mode == "copy" else (max(1, len(prompt) // 4), max(1, len(raw) // 4))
        pin, pout = self.prices.get(model or "", (0.0, 0.0))
        dur = 0.0 if mode == "copy" else round(0.3 + 4 * _h("dur", gen_id), 3)
        start = BASE_TIME + timedelta(seconds=self.n)
        atomic_write_json(fp(stage, gen_id, "raw_metadata.json"), raw_metadata(
            gen_id=gen_id, stage=stage, mode=mode, llm_model_id=model,
            model_slug=None if model is None else f"offline/{model}",
            provider=None if model is None else "offline", simulated=True,
            finish_reason="length" if truncated else ("copy" if mode == "copy" else "stop"),
            truncated=truncated, prompt_tokens=pt, completion_tokens=ct,
            cost_usd=round((pt * pin + ct * pout) / 1e6, 8), cost_source=None if mode == "copy" else "estimated",
            duration_s=dur,
            attempts=2 if _h("att", gen_id) < 0.05 else 1,
            started_at=start.isoformat(), finished_at=(start + timedelta(seconds=dur)).isoformat(),
            prompt_sha256=_sha(prompt), raw_sha256=_sha(raw), valid=valid, invalid_reason=reason))

    def parsed(self, stage, gen_id, parser, text, *, success=True, error=None, raw_tail_preview=None,
               score=None, scale=None):
        if success:
            atomic_write_text(self.paths.gen_file(stage, gen_id, "parsed.txt"), text)
        inputs = self.inputs(stage, gen_id)
        atomic_write_json(self.paths.gen_file(stage, gen_id, "parsed_metadata.json"), parsed_metadata(
            gen_id=gen_id, stage=stage, parser=parser, success=success, error=error,
            raw_tail_preview=raw_tail_preview, simulated=True, input_fingerprint=inputs.fingerprint,
            parsed_sha256=_sha(text) if success else None, finished_at=BASE_TIME.isoformat(),
            template_sha256=inputs.template_sha256, parent_sha256=inputs.parent_sha256,
            score=score, scale=scale))


def _draft_text(names: list[str], template: str, model: str, hostile: bool) -> str:
    lines = [f"# Idea: {names[0]} meets {names[-1]}", ""]
    for a, b in zip(names, names[1:] + names[:1]):
        lines.append(f"- {a} suggests a way to read {b.lower()}: look for where one repeats the other.")
    lines += ["", f"Mechanism ({template}, {model}): combine {', '.join(n.lower() for n in names)} "
              "into one test that a small team could run in a month."]
    if hostile:
        lines += ["", HOSTILE]
    return "\n".join(lines) + "\n"


def _essay_body(draft: str, model: str) -> str:
    paras = [p for p in draft.split("\n\n") if p.strip()]
    return (f"This essay ({model}) develops the draft below into an argument.\n\n" + "\n\n".join(paras)
            + "\n\nThe claim is testable, cheap to check, and would change what practitioners do.\n")


def make_synthetic_cohort(root: Path, cohort_id: str = "synth", *, n_essays: int,
                          evaluators=("sim-alpha", "sim-beta"),
                          rubrics=(("novelty-v1", 0, 9), ("rigor-v1", 0, 10)),
                          replicates: int = 2, seed: int = 0, failure_rate: float = 0.03,
                          include_hostile: bool = True, write_catalog: bool = True) -> DataPaths:
    """Write catalogs, a cohort (membership + manifest) and every generation's files under ``root``.

    Each draft gets up to three essays (two llm, one copy). Evaluations = n_essays × evaluators ×
    rubrics × replicates. With ``failure_rate`` > 0: evaluations #1, #2, #3 are a parse failure, a
    truncation and a pending one (only metadata.json), others fail at that rate; the last llm-mode
    essay of a cohort of ≥ 4 essays fails validation (too short), leaving its evaluations pending.
    Outputs already in the store (written for another cohort) are kept, never overwritten, so
    cohorts built on one root stay consistent. With ``include_hostile`` the first draft (and its essays) carry script tags and markdown/Jinja
    control text, and one evaluation's reasoning quotes it.
    """
    paths = DataPaths(Path(root))
    rubrics = [(t, float(lo), float(hi)) for t, lo, hi in rubrics]
    n_drafts = math.ceil(n_essays / len(ESSAY_VARIANTS))
    per_combo = len(DRAFT_TEMPLATES) * len(WRITERS)
    combos = _combos(max(1, math.ceil(n_drafts / per_combo)))
    models = sorted(set(WRITERS) | set(evaluators))
    prices = {m: (round(0.5 + 2 * _h("in", m), 2), round(2 + 8 * _h("out", m), 2)) for m in models}
    if write_catalog:
        _write_catalog(paths, combos, models, rubrics)
    names = {c: n for c, n, _ in CONCEPTS}
    descs = {c: d for c, _, d in CONCEPTS}
    w = _Writer(paths, cohort_id, prices)
    member: dict[str, list[list]] = {"draft": [], "essay": [], "evaluation": []}
    fail_on = failure_rate > 0
    llm_essays = [i for i in range(n_essays) if ESSAY_VARIANTS[i % len(ESSAY_VARIANTS)][1] is not None]
    failed_essay = llm_essays[-1] if fail_on and n_essays >= 4 else -1
    # Latent structure: shared effects by factor level, biases per evaluator and rubric.
    eff = lambda *k: (_h(seed, "eff", *k) - 0.5) * 0.3  # noqa: E731
    n_eval = 0

    for e_idx in range(n_essays):
        d_idx, variant = divmod(e_idx, len(ESSAY_VARIANTS))
        c_idx, dd = divmod(d_idx, per_combo)
        combo, concept_ids, _k = combos[c_idx]
        d_tpl = DRAFT_TEMPLATES[dd // len(WRITERS)][0]
        d_llm = WRITERS[dd % len(WRITERS)]
        draft_id = ids.draft_gen_id(combo, d_tpl, d_llm, 1)
        hostile = include_hostile and d_idx == 0
        cnames = [names[c] for c in concept_ids]
        draft_text = _draft_text(cnames, d_tpl, d_llm, hostile)
        if variant == 0:
            w.metadata("draft", draft_id, d_tpl, d_llm, 1, "llm", None, combo, combo, concept_ids)
            member["draft"].append(["draft", draft_id, "", combo, d_tpl, d_llm, 1, "llm"])
        if variant == 0 and not w.exists("draft", draft_id):
            prompt = "\n".join(f"- {names[c]}: {descs[c]}" for c in concept_ids) + "\n"
            w.raw("draft", draft_id, d_llm, "llm", prompt, draft_text)
            w.parsed("draft", draft_id, "identity", draft_text)

        e_tpl, e_llm = ESSAY_VARIANTS[variant]
        mode = "copy" if e_llm is None else "llm"
        essay_id = ids.essay_gen_id(draft_id, e_tpl, e_llm, 1)
        w.metadata("essay", essay_id, e_tpl, e_llm, 1, mode, draft_id, combo, draft_id)
        member["essay"].append(["essay", essay_id, draft_id, combo, e_tpl, e_llm or "", 1, mode])
        essay_ok = e_idx != failed_essay
        if w.exists("essay", essay_id):
            essay_text = read_text(paths.gen_file("essay", essay_id, "parsed.txt"))
            essay_ok = essay_text is not None
        elif mode == "copy":
            essay_text = draft_text
            w.raw("essay", essay_id, None, "copy", draft_text, draft_text)
            w.parsed("essay", essay_id, "identity", essay_text)
        elif essay_ok:
            essay_text = _essay_body(draft_text, e_llm)
            prompt = f"Expand the draft. Answer inside <essay></essay>.\n\n{draft_text}"
            w.raw("essay", essay_id, e_llm, "llm", prompt, f"<thinking>plan</thinking>\n<essay>\n{essay_text}</essay>\n")
            w.parsed("essay", essay_id, "essay_block", essay_text)
        else:  # recorded as the runner records an invalid response
            w.raw("essay", essay_id, e_llm, "llm", "Expand the draft.\n", "Too short.\n",
                  valid=False, reason="too_short")
            w.parsed("essay", essay_id, "essay_block", "", success=False, error="too_short",
                     raw_tail_preview="Too short.\n")
        quality = (eff("dt", d_tpl) + eff("dl", d_llm) + eff("el", e_llm or "copy") + eff("combo", combo)
                   + (_h(seed, "q", essay_id) - 0.5) * 0.4)

        for r_tpl, lo, hi in rubrics:
            for ev in evaluators:
                for rep in range(1, replicates + 1):
                    n_eval += 1
                    v_id = ids.evaluation_gen_id(essay_id, r_tpl, ev, rep)
                    w.metadata("evaluation", v_id, r_tpl, ev, rep, "llm", essay_id, combo, essay_id)
                    member["evaluation"].append(["evaluation", v_id, essay_id, combo, r_tpl, ev, rep, "llm"])
                    u = _h(seed, "fail", v_id)
                    kind = ({1: "parse", 2: "truncated", 3: "pending"}.get(n_eval) if fail_on else None) or (
                        "parse" if u < failure_rate * 0.5 else "truncated" if u < failure_rate * 0.8
                        else "pending" if u < failure_rate else None)
                    if not essay_ok or kind == "pending" or w.exists("evaluation", v_id):
                        continue
                    norm = 0.55 + quality + eff("ev", ev) + eff("rub", r_tpl) + (_h(seed, "n", v_id) - 0.5) * 0.25
                    step = 0.5 if _h("half", v_id) < 0.25 else 1.0
                    score = min(hi, max(lo, round((lo + norm * (hi - lo)) / step) * step))
                    s = _fmt(score)
                    reasoning = (f"The essay on {', '.join(cnames).lower()} is {'clear' if norm > 0.5 else 'uneven'}; "
                                 f"the mechanism is {'specific' if norm > 0.6 else 'vague'}.\n")
                    if hostile and rep == 1:
                        reasoning += f"It quotes: {HOSTILE}"
                    prompt = f"Rate this essay on {r_tpl} from {_fmt(lo)} to {_fmt(hi)}.\n\n{essay_text}"
                    fmt = SCORE_FORMATS[int(_h("fmt", v_id) * len(SCORE_FORMATS))]
                    if kind == "truncated":
                        cut = reasoning[: len(reasoning) // 2]
                        w.raw("evaluation", v_id, ev, "llm", prompt, cut, valid=False, reason="truncated", truncated=True)
                        w.parsed("evaluation", v_id, "score", "", success=False, error="truncated",
                                 raw_tail_preview=cut[-200:], scale=(lo, hi))
                    elif kind == "parse":
                        raw = reasoning + "Overall I would rate it fairly well.\n"
                        w.raw("evaluation", v_id, ev, "llm", prompt, raw)
                        w.parsed("evaluation", v_id, "score", "", success=False,
                                 error="no score found at the end of the response", raw_tail_preview=raw[-200:],
                                 scale=(lo, hi))
                    else:
                        w.raw("evaluation", v_id, ev, "llm", prompt, reasoning + fmt.format(s=s, hi=_fmt(hi)) + "\n")
                        w.parsed("evaluation", v_id, "score", s + "\n", score=score, scale=(lo, hi))

    rows = member["draft"] + member["essay"] + member["evaluation"]
    atomic_write_csv(paths.membership_csv(cohort_id),
                     ["stage", "gen_id", "parent_gen_id", "combo_id", "template_id", "llm_model_id", "replicate", "mode"],
                     rows)
    atomic_write_json(paths.manifest_json(cohort_id), {
        "cohort_id": cohort_id,
        "combos": sorted({r[3] for r in member["draft"]}),
        "templates": {s: sorted({r[4] for r in member[s]}) for s in member},
        "models": {s: sorted({r[5] for r in member[s] if r[5]}) for s in member},
        "replicates": {"draft": 1, "essay": 1, "evaluation": replicates},
        "fingerprints": {"catalog": _sha(dumps_json([models, rubrics])), "spec": _sha(f"synthetic|{seed}|{n_essays}")},
        "simulated": True,
    })
    return paths
