"""Report tables of a search cohort (its ``search:`` section), for the search page.

Written next to the other tables under ``data/cohorts/<cohort_id>/reports/``:

- ``search_rounds.csv``: one row per combo tried, by round: round, k, combo_id, concepts
  (``;``-joined concept ids), parents (``;``-joined combo_ids of the previous round's kept combos
  it grew from; blank in round 0), status (``scored`` | ``running``), n (scored evaluations),
  n_essays, mean (score_norm), ci_low, ci_high (95 %, cluster bootstrap over essays; blank with
  fewer than 3 essays), statistic (the selection statistic's name), value (its value), rank
  (1 = best of its round by value, ties by combo_id; blank while running or without a value),
  kept (True/False), calls (model calls its generations take), calls_made (model calls recorded
  in the store, retries not counted), cost_usd (recorded cost; blank when any call recorded none),
  essay_gen_ids (``;``-joined, best mean score_norm first: the combo's essays, for links).
- ``search_summary.csv``: one row per round: round, k, status, combos, kept (``;``-joined
  combo_ids, best first), calls, calls_made, cost_usd, best_combo_id, best_concepts, best_value,
  best_mean, best_ci_low, best_ci_high (the round's best combo), cumulative_calls, then the search's
  status on every row: search_status (``running`` | ``stopped``), stop_code (``target`` |
  ``rounds`` | ``max_k`` | ``budget`` | ``exhausted`` | ``no_scores``; blank while running),
  stop_reason, combos_tried, combos_full_factorial, generations, generations_full_factorial,
  generations_ratio (generations / generations_full_factorial).
- ``search.json``: the search's record as the runner keeps it (status, stop reason, rounds with
  their combos and kept ids, the best combos overall with their statistics).
"""

from __future__ import annotations

import math

import pandas as pd

from ..search import SearchState, ranked
from ..store import DataPaths, atomic_write_json

SEARCH_TABLES = ("search_rounds", "search_summary")
ROUND_COLUMNS = ["round", "k", "combo_id", "concepts", "parents", "status", "n", "n_essays", "mean", "ci_low",
                 "ci_high", "statistic", "value", "rank", "kept", "calls", "calls_made", "cost_usd", "essay_gen_ids"]
SUMMARY_COLUMNS = ["round", "k", "status", "combos", "kept", "calls", "calls_made", "cost_usd", "best_combo_id",
                   "best_concepts", "best_value", "best_mean", "best_ci_low", "best_ci_high", "cumulative_calls",
                   "search_status", "stop_code", "stop_reason", "combos_tried", "combos_full_factorial",
                   "generations", "generations_full_factorial", "generations_ratio"]


def _spend(generations: pd.DataFrame) -> dict[str, tuple[int, float | None]]:
    """Per combo_id: model calls recorded, and their cost (None when any call has no cost)."""
    calls = generations[(generations["mode"] == "llm") & generations["finish_reason"].notna()
                        & (generations["finish_reason"].astype(str) != "")]
    out = {}
    for cid, g in calls.groupby("combo_id"):
        cost = pd.to_numeric(g["cost_usd"], errors="coerce")
        out[cid] = (len(g), None if cost.isna().any() else float(cost.sum()))
    return out


def _essays(scores: pd.DataFrame) -> dict[str, str]:
    """Per combo_id: its essays, best mean score_norm first (ties by id)."""
    s = scores.assign(score_norm=pd.to_numeric(scores["score_norm"], errors="coerce"))
    means = s.groupby(["combo_id", "essay_gen_id"])["score_norm"].mean().reset_index()
    means = means.assign(order=-means["score_norm"].fillna(-1)).sort_values(["combo_id", "order", "essay_gen_id"])
    return {cid: ";".join(g["essay_gen_id"]) for cid, g in means.groupby("combo_id")}


def search_tables(state: SearchState, record: dict, generations: pd.DataFrame,
                  scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``search_rounds`` and ``search_summary`` of a derived search (pure)."""
    stat = state.defn.statistic
    spend, essays = _spend(generations), _essays(scores)
    rows, summary, cumulative = [], [], 0.0
    kept_before: list[tuple[str, set]] = []
    for rnd, recorded in zip(state.rounds, record["rounds"]):
        results = {r.combo_id: r for r in rnd.results or []}
        ranks = {r.combo_id: i for i, r in enumerate(ranked(list(results.values()), stat), 1)
                 if math.isfinite(r.value(stat))}
        round_rows = []
        for combo in rnd.combos:
            cid = state.defn.combo_id(combo)
            r = results.get(cid)
            made, cost = spend.get(cid, (0, 0.0))
            round_rows.append({
                "round": rnd.index, "k": len(combo), "combo_id": cid, "concepts": ";".join(combo),
                "parents": ";".join(p for p, concepts in kept_before if concepts < set(combo)),
                "status": "running" if r is None else "scored", "n": r.n if r else 0,
                "n_essays": r.n_essays if r else 0, "mean": r.mean if r else None, "ci_low": r.ci_low if r else None,
                "ci_high": r.ci_high if r else None, "statistic": stat, "value": r.value(stat) if r else None,
                "rank": ranks.get(cid), "kept": cid in rnd.kept, "calls": r.calls if r else None,
                "calls_made": made, "cost_usd": cost, "essay_gen_ids": essays.get(cid, ""),
            })
        rows += round_rows
        cumulative += recorded["calls"]
        best = results.get(rnd.kept[0]) if rnd.kept else None
        costs = [x["cost_usd"] for x in round_rows]
        summary.append({
            "round": rnd.index, "k": rnd.k, "status": "running" if rnd.results is None else "scored",
            "combos": len(rnd.combos), "kept": ";".join(rnd.kept), "calls": recorded["calls"],
            "calls_made": sum(x["calls_made"] for x in round_rows),
            "cost_usd": None if any(c is None for c in costs) else sum(costs),
            "best_combo_id": best.combo_id if best else None, "best_concepts": ";".join(best.combo) if best else None,
            "best_value": best.value(stat) if best else None, "best_mean": best.mean if best else None,
            "best_ci_low": best.ci_low if best else None, "best_ci_high": best.ci_high if best else None,
            "cumulative_calls": cumulative,
        })
        kept_before = [(cid, set(results[cid].combo)) for cid in rnd.kept]
    ratio = record["generations"] / record["generations_full_factorial"] if record["generations_full_factorial"] else None
    for s in summary:
        s.update(search_status=record["status"], stop_code=record["stop_code"], stop_reason=record["stop_reason"],
                 combos_tried=record["combos_tried"], combos_full_factorial=record["combos_full_factorial"],
                 generations=record["generations"], generations_full_factorial=record["generations_full_factorial"],
                 generations_ratio=ratio)
    return dict(zip(SEARCH_TABLES, (pd.DataFrame(rows, columns=ROUND_COLUMNS),
                                    pd.DataFrame(summary, columns=SUMMARY_COLUMNS))))


def build_search_reports(paths: DataPaths, cohort_id: str, state: SearchState, record: dict,
                         tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Write the tables and the record of a search (``search_store.derive``) under the reports dir."""
    from . import write_table

    out = search_tables(state, record, tables["generations"], tables["scores"])
    for name, df in out.items():
        write_table(paths.reports_dir(cohort_id) / f"{name}.csv", df)
    atomic_write_json(paths.reports_dir(cohort_id) / "search.json", record)
    return out
