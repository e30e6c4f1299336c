"""Report tables of a search cohort (its ``search:`` section), for the search page.

Written next to the other tables under ``data/cohorts/<cohort_id>/reports/``:

- ``search_rounds.csv``: one row per combo tried, by round: round, k, combo_id, concepts
  (``;``-joined concept ids), parents (``;``-joined combo_ids of the previous round's kept combos
  it grew from; blank in round 0), status (``scored`` | ``running``), n (scored evaluations),
  n_essays, mean (score_norm: the mean over its drafts of each draft's mean), ci_low, ci_high (95 %
  Student-t interval over the drafts' means; blank when not estimable), n_drafts (the interval's
  units), ci_method, not_estimable (why there is no interval: one draft, or drafts that all score
  the same; blank when there is one), statistic (the selection statistic's name), value (its
  value), rank (1 = best of its round by value, ties by combo_id; blank while running or without
  a value), kept (True/False), then the confirmation, on the row of a combo confirmed on fresh
  drafts (blank elsewhere): confirm_number (1 = the search's first), confirm_level (the two-sided
  level whose lower bound decides: 0.95, then 0.975, …), confirm_status, confirm_n_drafts,
  confirm_mean, confirm_ci_low, confirm_ci_high (at confirm_level, over the fresh drafts only),
  confirmed (True/False), confirm_verdict; then calls (model calls its selection generations
  take), calls_made (model calls recorded in the store, retries not counted), cost_usd (recorded
  cost; blank when any call recorded none), confirm_calls, confirm_calls_made, confirm_cost_usd,
  essay_gen_ids (``;``-joined, best mean score_norm first: the combo's selection essays, for
  links), confirm_essay_gen_ids (the confirmation's).
- ``search_summary.csv``: one row per round: round, k, status, combos, kept (``;``-joined
  combo_ids, best first), calls, calls_made, cost_usd, best_combo_id, best_concepts, best_value,
  best_mean, best_ci_low, best_ci_high (the round's best combo), confirm_combo_id, confirm_level,
  confirm_n_drafts, confirm_mean, confirm_ci_low, confirm_ci_high, confirmed, confirm_calls (the
  round's confirmation, blank without one), cumulative_calls (rounds and confirmations), then the
  search's status on every row: search_status (``running`` | ``stopped``), stop_code (``target`` |
  ``rounds`` | ``max_k`` | ``budget`` | ``exhausted`` | ``no_scores``; blank while running),
  stop_reason, target, claimed (the confirmed combo_id when the target was reached), combos_tried,
  combos_full_factorial, confirmations, generations, generations_full_factorial,
  generations_ratio (generations / generations_full_factorial).
- ``search.json``: the search's record as the runner keeps it (status, stop reason, rounds with
  their combos, kept ids and confirmation with both estimates, the best combos overall with their
  statistics).
"""

from __future__ import annotations

import math

import pandas as pd

from pipeline.design.search import CI_METHOD, SearchState, ranked
from pipeline.store import DataPaths, atomic_write_json

SEARCH_TABLES = ("search_rounds", "search_summary")
CONFIRM_COLUMNS = ["confirm_number", "confirm_level", "confirm_status", "confirm_n_drafts", "confirm_mean",
                   "confirm_ci_low", "confirm_ci_high", "confirmed", "confirm_verdict"]
ROUND_COLUMNS = ["round", "k", "combo_id", "concepts", "parents", "status", "n", "n_essays", "mean", "ci_low",
                 "ci_high", "n_drafts", "ci_method", "not_estimable", "statistic", "value", "rank", "kept",
                 *CONFIRM_COLUMNS, "calls", "calls_made", "cost_usd", "confirm_calls", "confirm_calls_made",
                 "confirm_cost_usd", "essay_gen_ids", "confirm_essay_gen_ids"]
SUMMARY_COLUMNS = ["round", "k", "status", "combos", "kept", "calls", "calls_made", "cost_usd", "best_combo_id",
                   "best_concepts", "best_value", "best_mean", "best_ci_low", "best_ci_high", "confirm_combo_id",
                   "confirm_level", "confirm_n_drafts", "confirm_mean", "confirm_ci_low", "confirm_ci_high",
                   "confirmed", "confirm_calls", "cumulative_calls", "search_status", "stop_code", "stop_reason",
                   "target", "claimed", "combos_tried", "combos_full_factorial", "confirmations", "generations",
                   "generations_full_factorial", "generations_ratio"]


def _num(x):
    return x if x is not None and math.isfinite(x) else None


def _draft_replicates(generations: pd.DataFrame) -> dict[str, int]:
    """Per gen_id of every stage: the replicate of the draft it descends from."""
    g = generations.set_index("gen_id")
    rep = pd.to_numeric(g["replicate"], errors="coerce")
    parent = g["parent_gen_id"].fillna("").astype(str)
    out: dict[str, int] = {}
    for stage in ("draft", "essay", "evaluation"):
        for gid in g.index[g["stage"] == stage]:
            if stage == "draft":
                out[gid] = int(rep[gid]) if pd.notna(rep[gid]) else 0
            else:
                out[gid] = out.get(parent[gid], 0)
    return out


def _spend(generations: pd.DataFrame, confirm: set[int], of_draft: dict[str, int]
           ) -> dict[tuple[str, bool], tuple[int, float | None]]:
    """Per (combo_id, a confirmation's generations or not): model calls recorded, and their cost
    (None when any call has no cost)."""
    calls = generations[(generations["mode"] == "llm") & generations["finish_reason"].notna()
                        & (generations["finish_reason"].astype(str) != "")]
    calls = calls.assign(confirm=[of_draft.get(g, 0) in confirm for g in calls["gen_id"]])
    out = {}
    for (cid, conf), g in calls.groupby(["combo_id", "confirm"]):
        cost = pd.to_numeric(g["cost_usd"], errors="coerce")
        out[cid, bool(conf)] = (len(g), None if cost.isna().any() else float(cost.sum()))
    return out


def _essays(scores: pd.DataFrame, confirm: set[int]) -> dict[tuple[str, bool], str]:
    """Per (combo_id, a confirmation's essays or not): its essays, best mean score_norm first (ties by id)."""
    s = scores.assign(score_norm=pd.to_numeric(scores["score_norm"], errors="coerce"),
                      confirm=pd.to_numeric(scores["draft_replicate"], errors="coerce").isin(confirm))
    means = s.groupby(["combo_id", "confirm", "essay_gen_id"])["score_norm"].mean().reset_index()
    means = means.assign(order=-means["score_norm"].fillna(-1)).sort_values(["combo_id", "order", "essay_gen_id"])
    return {(cid, bool(conf)): ";".join(g["essay_gen_id"]) for (cid, conf), g in means.groupby(["combo_id", "confirm"])}


def _confirm_columns(c) -> dict:
    """A confirmation's columns (``search.json``'s round entry ``confirm``), blank without one."""
    if not c:
        return {k: None for k in CONFIRM_COLUMNS}
    est = c["confirmation"]
    return {"confirm_number": c["number"], "confirm_level": est["ci_level"], "confirm_status": c["status"],
            "confirm_n_drafts": est["n_drafts"], "confirm_mean": est["mean"], "confirm_ci_low": est["ci_low"],
            "confirm_ci_high": est["ci_high"], "confirmed": c["confirmed"], "confirm_verdict": c["verdict"]}


def search_tables(state: SearchState, record: dict, generations: pd.DataFrame,
                  scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``search_rounds`` and ``search_summary`` of a derived search (pure)."""
    stat = state.defn.statistic
    confirm = {int(x) for r in record["rounds"] if r.get("confirm") for x in r["confirm"]["replicates"]}
    spend = _spend(generations, confirm, _draft_replicates(generations) if confirm else {})
    essays = _essays(scores, confirm)
    rows, summary, cumulative = [], [], 0.0
    kept_before: list[tuple[str, set]] = []
    for rnd, recorded in zip(state.rounds, record["rounds"]):
        results = {r.combo_id: r for r in rnd.results or []}
        ranks = {r.combo_id: i for i, r in enumerate(ranked(list(results.values()), stat), 1)
                 if math.isfinite(r.value(stat))}
        conf = recorded.get("confirm")
        round_rows = []
        for combo in rnd.combos:
            cid = state.defn.combo_id(combo)
            r = results.get(cid)
            made, cost = spend.get((cid, False), (0, 0.0))
            mine = conf if conf and conf["combo_id"] == cid else None
            c_made, c_cost = spend.get((cid, True), (0, 0.0)) if mine else (None, None)
            round_rows.append({
                "round": rnd.index, "k": len(combo), "combo_id": cid, "concepts": ";".join(combo),
                "parents": ";".join(p for p, concepts in kept_before if concepts < set(combo)),
                "status": "running" if r is None else "scored", "n": r.n if r else 0,
                "n_essays": r.n_essays if r else 0, "mean": _num(r.mean) if r else None,
                "ci_low": _num(r.ci_low) if r else None, "ci_high": _num(r.ci_high) if r else None,
                "n_drafts": r.n_units if r else 0, "ci_method": CI_METHOD if r else None,
                "not_estimable": r.not_estimable if r else None,
                "statistic": stat, "value": _num(r.value(stat)) if r else None,
                "rank": ranks.get(cid), "kept": cid in rnd.kept, **_confirm_columns(mine),
                "calls": r.calls if r else None, "calls_made": made, "cost_usd": cost,
                "confirm_calls": mine["calls"] if mine else None, "confirm_calls_made": c_made,
                "confirm_cost_usd": c_cost, "essay_gen_ids": essays.get((cid, False), ""),
                "confirm_essay_gen_ids": essays.get((cid, True), "") if mine else "",
            })
        rows += round_rows
        cumulative += recorded["calls"] + (conf["calls"] if conf else 0)
        best = results.get(rnd.kept[0]) if rnd.kept else None
        costs = [x["cost_usd"] for x in round_rows]
        cc = _confirm_columns(conf)
        summary.append({
            "round": rnd.index, "k": rnd.k, "status": "running" if rnd.results is None else "scored",
            "combos": len(rnd.combos), "kept": ";".join(rnd.kept), "calls": recorded["calls"],
            "calls_made": sum(x["calls_made"] for x in round_rows),
            "cost_usd": None if any(c is None for c in costs) else sum(costs),
            "best_combo_id": best.combo_id if best else None, "best_concepts": ";".join(best.combo) if best else None,
            "best_value": _num(best.value(stat)) if best else None, "best_mean": _num(best.mean) if best else None,
            "best_ci_low": _num(best.ci_low) if best else None, "best_ci_high": _num(best.ci_high) if best else None,
            "confirm_combo_id": conf["combo_id"] if conf else None,
            **{k: cc[k] for k in ("confirm_level", "confirm_n_drafts", "confirm_mean", "confirm_ci_low",
                                  "confirm_ci_high", "confirmed")},
            "confirm_calls": conf["calls"] if conf else None, "cumulative_calls": cumulative,
        })
        kept_before = [(cid, set(results[cid].combo)) for cid in rnd.kept]
    ratio = record["generations"] / record["generations_full_factorial"] if record["generations_full_factorial"] else None
    for s in summary:
        s.update(search_status=record["status"], stop_code=record["stop_code"], stop_reason=record["stop_reason"],
                 target=record.get("target"), claimed=record.get("claimed"),
                 combos_tried=record["combos_tried"], combos_full_factorial=record["combos_full_factorial"],
                 confirmations=record.get("confirmations", 0), generations=record["generations"],
                 generations_full_factorial=record["generations_full_factorial"], generations_ratio=ratio)
    counts = ("confirm_number", "confirm_n_drafts", "confirm_calls", "confirm_calls_made")
    rounds_df = pd.DataFrame(rows, columns=ROUND_COLUMNS).astype({c: "Int64" for c in counts})
    summary_df = pd.DataFrame(summary, columns=SUMMARY_COLUMNS).astype(
        {c: "Int64" for c in ("confirm_n_drafts", "confirm_calls")})
    return dict(zip(SEARCH_TABLES, (rounds_df, summary_df)))


def build_search_reports(paths: DataPaths, cohort_id: str, state: SearchState, record: dict,
                         tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Write the tables and the record of a search (``search_store.derive``) under the reports dir."""
    from pipeline.reports import write_table

    out = search_tables(state, record, tables["generations"], tables["scores"])
    for name, df in out.items():
        write_table(paths.reports_dir(cohort_id) / f"{name}.csv", df)
    atomic_write_json(paths.reports_dir(cohort_id) / "search.json", record)
    return out
