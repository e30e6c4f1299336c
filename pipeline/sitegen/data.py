"""Read what the site shows: report CSVs (written by ``pipeline.reports``) and catalog names.

The site is built only from persisted files, like the reports themselves, so it can be rebuilt
at any time. Every column is read as text and only known numeric columns are converted, so an id
that looks like a number (a template called ``2024``) is never turned into ``2024.0``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd

from pipeline.errors import DaydreamError
from pipeline.ids import is_safe_id
from pipeline.reports import TABLES
from pipeline.store import DataPaths, read_text

NUMERIC = {
    "prompt_tokens", "completion_tokens", "cost_usd", "duration_s", "attempts", "score", "scale_min",
    "scale_max", "score_norm", "n", "n_unscored", "n_essays", "mean", "std", "min", "max", "mean_norm",
    "share_high", "share_low", "share_max", "range", "range_norm", "cv", "n_raters", "icc2_1", "mean_pearson",
    "n_rater_pairs", "retest_icc2_1", "n_retest_units", "rank", "expected", "coverage", "done", "stale", "failed",
    "pending", "n_simulated", "n_cohorts", "mean_across_cohorts", "delta",
    "ci_low", "ci_high", "icc2_1_ci_low", "icc2_1_ci_high", "mean_pearson_ci_low", "mean_pearson_ci_high",
    "n_pearson_essays", "retest_icc2_1_ci_low", "retest_icc2_1_ci_high", "n_cost_unknown", "n_essays_reference",
    "mean_reference", "diff", "n_units", "mean_a", "mean_b", "r", "r_ci_low", "r_ci_high", "delta_ci_low",
    "delta_ci_high", "n_cells", "calls", "cost_reported_usd", "cost_estimated_usd", "n_cost_reported",
    "n_cost_estimated", "round", "k", "combos", "value", "calls_made", "best_value", "best_mean", "best_ci_low",
    "best_ci_high", "cumulative_calls", "combos_tried", "combos_full_factorial", "generations",
    "generations_full_factorial", "generations_ratio",
    "n_clusters", "mean_marginal", "diff_marginal", "p_value", "p_holm", "n_family", "rank_ci_low", "rank_ci_high",
    "tier", "mean_raw", "n_cells_missing", "icc3_1", "icc3_1_ci_low", "icc3_1_ci_high", "icc2_k", "icc2_k_ci_low",
    "icc2_k_ci_high", "alpha", "alpha_ci_low", "alpha_ci_high", "n_alpha_essays", "variance", "sd", "share",
    "n_levels", "n_replicates",
}
BOOLEAN = {"simulated", "in_cohort"}


def read_table(path) -> pd.DataFrame | None:
    """A report CSV as a DataFrame (None if the file does not exist)."""
    text = read_text(path)
    if text is None:
        return None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except pd.errors.ParserError as exc:
        raise DaydreamError("site", f"report table is not valid CSV ({exc})", path=path) from None
    for col in df.columns:
        if col in NUMERIC:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        elif col in BOOLEAN:
            df[col] = df[col].str.lower().isin(("true", "1", "yes"))
    return df


def records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts, NaN as None (templates and formatters test for None)."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def cohorts_with_reports(paths: DataPaths) -> list[str]:
    """Cohorts whose reports directory holds a leaderboard, sorted by id."""
    if not paths.cohorts.is_dir():
        return []
    return sorted(p.name for p in paths.cohorts.iterdir()
                  if is_safe_id(p.name) and (p / "reports" / "leaderboard.csv").is_file())


def load_cohort_tables(paths: DataPaths, cohort_id: str) -> dict[str, pd.DataFrame]:
    """Every report table of a cohort; a missing one is a ``site`` error naming it."""
    out = {}
    for name in TABLES:
        path = paths.reports_dir(cohort_id) / f"{name}.csv"
        df = read_table(path)
        if df is None:
            raise DaydreamError("site", f"report table {name}.csv is missing: build the cohort's reports first",
                                path=path)
        out[name] = df
    return out


def load_cross_cohort(paths: DataPaths) -> pd.DataFrame | None:
    return read_table(paths.cross_cohort_dir() / "cross_cohort.csv")


@dataclass
class Names:
    """Display names from the catalog, falling back to ids when the catalog lacks an entry.

    The site must build even when the catalog has changed since the run, so nothing here raises.
    """

    catalog: object | None = None
    combos: dict = field(default_factory=dict)  # combo_id → {concept_ids, level, k} from cohort manifests
    _concept_text: dict = field(default_factory=dict)   # also template texts: read once per build

    @classmethod
    def load(cls, paths: DataPaths) -> "Names":
        from pipeline.design.catalog import load_catalog

        try:
            return cls(load_catalog(paths))
        except DaydreamError:
            return cls(None)

    def model(self, model_id) -> str:
        mid = "" if model_id is None else str(model_id)
        if mid == "copy":
            return "copy (no model)"
        m = self.catalog.models.get(mid) if self.catalog else None
        return m.display_name if m else (mid or "unknown")

    def template(self, stage: str, template_id) -> str:
        tid = "" if template_id is None else str(template_id)
        t = self.catalog.templates.get(stage, {}).get(tid) if self.catalog else None
        return t.name if t else (tid or "unknown")

    def template_text(self, stage: str, template_id) -> str | None:
        """A template's text as the catalog holds it now (None when absent or unreadable)."""
        key = ("template", stage, str(template_id))
        if key not in self._concept_text:
            t = self.catalog.templates.get(stage, {}).get(str(template_id)) if self.catalog else None
            try:
                self._concept_text[key] = t.text if t else None
            except DaydreamError:
                self._concept_text[key] = None
        return self._concept_text[key]

    def concept(self, concept_id: str) -> str:
        c = self.catalog.concepts.get(concept_id) if self.catalog else None
        return c.name if c else concept_id

    def add_manifest_combos(self, manifest: dict | None) -> None:
        """Combos a cohort compiled (spec-defined ones are not in the catalog's combo_mappings)."""
        combos = (manifest or {}).get("combos")
        if isinstance(combos, dict):
            for cid, c in combos.items():
                if isinstance(c, dict) and isinstance(c.get("concept_ids"), list):
                    self.combos.setdefault(str(cid), c)

    def combo(self, combo_id) -> dict | None:
        """Concepts of a combo with names and description text at the combo's level."""
        cid = str(combo_id)
        if cid in self.combos:
            c = self.combos[cid]
            concept_ids, level, k = [str(x) for x in c["concept_ids"]], str(c.get("level") or ""), c.get("k")
        elif self.catalog and cid in self.catalog.combos:
            c = self.catalog.combos[cid]
            concept_ids, level, k = list(c.concept_ids), c.level, c.k
        else:
            return None
        return {"level": level, "k": k, "concepts": [
            {"id": x, "name": self.concept(x), "text": self._description(x, level)} for x in concept_ids]}

    def _description(self, concept_id: str, level: str) -> str:
        key = (concept_id, level)
        if key not in self._concept_text:
            if not self.catalog or concept_id not in self.catalog.concepts:
                text = "(not in the catalog)"
            else:
                try:
                    text = self.catalog.concept_text(concept_id, level)
                except DaydreamError as exc:
                    text = f"(description unreadable: {exc.message})"
            self._concept_text[key] = text
        return self._concept_text[key]
