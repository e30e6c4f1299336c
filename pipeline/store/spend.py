"""Spend control, the pure part: what a call may cost, what it did cost, the ledger's arithmetic,
the estimate of a cohort's remaining work and the spend tables. No I/O here: ``ledger.py`` keeps
the ledger file, ``estimate.py`` gathers what an estimate is computed from.

Costs are USD. A cost nobody knows is ``None`` (shown as "unknown"), never 0: a provider that
reports no cost for a model the catalog has no prices for has not told us the call was free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

REPORTED, ESTIMATED, UNKNOWN = "reported", "estimated", "unknown"
COST_SOURCES = (REPORTED, ESTIMATED, UNKNOWN)
BUDGET_REACHED = "not run: budget reached"

# A BPE token covers at least one byte, so a prompt's UTF-8 length bounds its token count; the
# chat template adds a few tokens around the one user message.
CHAT_OVERHEAD_TOKENS = 16
# Without any history of a model's prompts, English text runs about 4 bytes per token.
DEFAULT_BYTES_PER_TOKEN = 4.0
EPSILON = 1e-12  # float sums of many small costs must not refuse a call that fits exactly
ALL = "(all)"


@dataclass(frozen=True)
class Prices:
    """USD per million tokens; ``free`` for the offline simulator, which cannot spend money."""

    input_per_mtok: float | None
    output_per_mtok: float | None
    free: bool = False

    @property
    def known(self) -> bool:
        return self.free or (self.input_per_mtok is not None and self.output_per_mtok is not None)

    @classmethod
    def of(cls, model) -> "Prices":
        """A catalog model's prices (``catalog.Model``)."""
        return cls(model.input_price_per_mtok, model.output_price_per_mtok, free=model.simulated)


DEFAULT_BATCH_DISCOUNT = 0.5  # what OpenAI, Anthropic and Google take off batch tokens


def batch_prices(model) -> Prices:
    """A catalog model's prices in a provider's batch jobs: its ``batch_discount`` (else
    ``DEFAULT_BATCH_DISCOUNT``) off both token prices."""
    prices = Prices.of(model)
    off = DEFAULT_BATCH_DISCOUNT if model.batch_discount is None else model.batch_discount
    scale = lambda price: None if price is None else price * (1 - off)  # noqa: E731
    return Prices(scale(prices.input_per_mtok), scale(prices.output_per_mtok), free=prices.free)


def catalog_prices(catalog) -> dict[str, Prices]:
    """Every catalog model's prices (``catalog.Catalog``), looked up once for many records."""
    return {model_id: Prices.of(model) for model_id, model in catalog.models.items()}


def token_cost(prices: Prices, prompt_tokens: float | None, completion_tokens: float | None) -> float | None:
    """Tokens × catalog prices; None when a price or a token count is missing."""
    if prices.free:
        return 0.0
    if not prices.known or prompt_tokens is None or completion_tokens is None:
        return None
    return (prompt_tokens * prices.input_per_mtok + completion_tokens * prices.output_per_mtok) / 1e6


def cost_and_source(reported: float | None, estimated: float | None) -> tuple[float | None, str]:
    """A call's cost and where it came from: the provider's own figure (``reported``), else the
    catalog prices (``estimated``), else ``unknown``."""
    if reported is not None:
        return reported, REPORTED
    return estimated, ESTIMATED if estimated is not None else UNKNOWN


def prompt_token_bound(prompt_bytes: int) -> int:
    return prompt_bytes + CHAT_OVERHEAD_TOKENS


def call_bound(prices: Prices, prompt_bytes: int, max_tokens: int | None) -> float | None:
    """The most one call can cost: every prompt byte a token, plus ``max_tokens`` of output.
    None when that cannot be known (no prices, or no output limit)."""
    if prices.free:
        return 0.0
    if max_tokens is None:
        return None
    return token_cost(prices, prompt_token_bound(prompt_bytes), max_tokens)


def call_deadline_s(timeout_s: float, max_attempts: int, backoff_max_s: float) -> float:
    """How long a call can take at most, every retry and wait included (and a minute of slack):
    past this its reservation belongs to a call that is no longer running."""
    return timeout_s * max_attempts + backoff_max_s * max(0, max_attempts - 1) + 60.0


def check_cap(value: object, what: str) -> float | None:
    """A spend cap as given by a user (``--max-cost``, ``budget_usd``): a finite amount ≥ 0, or
    None for no cap. Raises ValueError with the message to show."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an amount in USD, got {value!r}")
    try:
        cap = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an amount in USD, got {value!r}") from None
    if not math.isfinite(cap) or cap < 0:
        raise ValueError(f"{what} must be a finite amount in USD ≥ 0, got {value!r}")
    return cap


def usd(x: float | None) -> str:
    """A cost for people: unknown stays unknown; small amounts keep their significant digits."""
    if x is None:
        return "unknown"
    return f"${x:,.2f}" if abs(x) >= 100 else f"${x:.4f}"


# -------------------------------------------------------------------------------------------------
# The ledger: one JSON object per cohort, changed only under its lock (ledger.py). Reservations are
# the upper bounds of calls in flight; ``spent_usd`` holds settled calls and abandoned reservations.

FITS, WAIT, REACHED = "fits", "wait", "reached"
REACHED_KEPT = 20  # runs whose stop at the cap is remembered
ABANDONED_KEPT = 1000


def new_ledger(cohort_id: str) -> dict:
    return {"cohort_id": cohort_id, "spent_usd": 0.0, "calls": 0, "unknown_cost_calls": 0,
            "abandoned_usd": 0.0, "reserved": {}, "abandoned": {}, "reached": {}, "prepared": [], "current": None}


def reserved_usd(ledger: dict) -> float:
    return sum(r["usd"] for r in ledger["reserved"].values())


def expire(ledger: dict, now: float, alive: Callable[[dict], bool]) -> None:
    """Reservations whose call can no longer be running (its process is gone, or it is past the
    provider's own give-up time) are charged at their bound: the call may have been billed. A
    late ``settle`` of one of them still replaces the bound with the actual cost."""
    for token, r in list(ledger["reserved"].items()):
        if r["expires"] < now or not alive(r):
            abandon(ledger, token)
    for token in list(ledger["abandoned"])[:-ABANDONED_KEPT]:
        del ledger["abandoned"][token]


def abandon(ledger: dict, token: str) -> None:
    """Charge a reservation at its bound: its call's fate is unknown."""
    r = ledger["reserved"].pop(token, None)
    if r is not None:
        ledger["abandoned"][token] = r
        ledger["spent_usd"] += r["usd"]
        ledger["abandoned_usd"] += r["usd"]


def decide(ledger: dict, cap: float, bound: float, since: str) -> str:
    """Whether a call of cost at most ``bound`` may start now under ``cap``: it ``fits`` under
    spent + reserved; it must ``wait`` for the calls in flight to settle (they usually cost far
    less than their bound); or, with nothing in flight, the budget is ``reached`` for the run."""
    if since in ledger["reached"]:
        return REACHED
    if ledger["spent_usd"] + reserved_usd(ledger) + bound <= cap + EPSILON:
        return FITS
    return WAIT if ledger["reserved"] else REACHED


def mark_reached(ledger: dict, since: str, cap: float, bound: float, what: str, at: str) -> None:
    ledger["reached"].setdefault(since, {"at": at, "cap_usd": cap, "spent_usd": ledger["spent_usd"],
                                         "next_call_usd": bound, "next_call": what})
    for old in sorted(ledger["reached"])[:-REACHED_KEPT]:
        del ledger["reached"][old]


def reconcile(ledger: dict, recorded_usd: float, since: str, cap: float) -> None:
    """A capped run starts and becomes the cohort's current one. Runs without a cap are not in
    the ledger, so what the cohort's generations record as spent counts when it is more (each is
    a lower bound of the truth: the store keeps only each generation's last call, the ledger
    only calls made under a cap)."""
    if recorded_usd > ledger["spent_usd"] + EPSILON:
        ledger["spent_usd"] = recorded_usd
    ledger["current"] = {"since": since, "cap_usd": cap}
    ledger["prepared"] = (ledger.get("prepared", []) + [since])[-REACHED_KEPT:]


def settle(ledger: dict, token: str, cost: float | None, calls: int = 1) -> None:
    """Replace a reservation by what the call cost; an unknown cost stays charged at the bound.
    ``calls``: the calls it reserved for (a batch job reserves once for all of its requests)."""
    r = ledger["reserved"].pop(token, None)
    if r is None:
        r = ledger["abandoned"].pop(token, None)
        if r is None:
            return
        ledger["spent_usd"] -= r["usd"]  # charged when it expired; now we know better
        ledger["abandoned_usd"] -= r["usd"]
    ledger["calls"] += calls
    if cost is None:
        ledger["unknown_cost_calls"] += 1
    ledger["spent_usd"] += r["usd"] if cost is None else cost


# -------------------------------------------------------------------------------------------------
# Estimates


@dataclass(frozen=True)
class CallEstimate:
    """One model call still to make, as ``estimate.py`` sees it."""

    stage: str
    model_id: str
    prices: Prices
    prompt_bytes: float  # the rendered prompt's, or the template's plus a typical parent's
    bytes_per_token: float  # this model's, from its history, else DEFAULT_BYTES_PER_TOKEN
    completion_tokens: float  # this model's mean on this stage (and template), else max_tokens
    from_history: bool  # completion_tokens is a mean of earlier calls, not max_tokens
    max_tokens: int | None
    # the prices of the same call made one by one and in a batch job (``prices`` is one of them:
    # what the run will pay); None: the same as ``prices``
    sync_prices: Prices | None = None
    batch_prices: Prices | None = None

    @property
    def prompt_tokens(self) -> float:
        return self.prompt_bytes / self.bytes_per_token

    @property
    def cost_sync(self) -> float | None:
        return token_cost(self.sync_prices or self.prices, self.prompt_tokens, self.completion_tokens)

    @property
    def cost_batch(self) -> float | None:
        return token_cost(self.batch_prices or self.prices, self.prompt_tokens, self.completion_tokens)

    @property
    def cost(self) -> float | None:
        return token_cost(self.prices, self.prompt_tokens, self.completion_tokens)

    @property
    def bound(self) -> float | None:
        return call_bound(self.prices, math.ceil(self.prompt_bytes), self.max_tokens)


class History:
    """What models produced before, from recorded calls: mean completion tokens and parsed output
    size per (stage, template, model), with (stage, model) as the fallback, and each model's
    bytes per prompt token (what its tokenizer made of the prompts it was sent)."""

    def __init__(self):
        self._completion: dict[tuple, list[float]] = {}
        self._parsed: dict[tuple, list[float]] = {}
        self._bytes: dict[str, list[float]] = {}  # model -> [prompt bytes, prompt tokens]

    def add(self, stage: str, template_id: str, model_id: str, *, prompt_bytes: int | None,
            prompt_tokens: int | None, completion_tokens: int | None, parsed_bytes: int | None) -> None:
        for key in ((stage, template_id, model_id), (stage, model_id)):
            if completion_tokens is not None:
                self._completion.setdefault(key, []).append(completion_tokens)
            if parsed_bytes is not None:
                self._parsed.setdefault(key, []).append(parsed_bytes)
        if prompt_bytes and prompt_tokens:
            b = self._bytes.setdefault(model_id, [0.0, 0.0])
            b[0] += prompt_bytes
            b[1] += prompt_tokens

    def samples(self, stage: str, template_id: str, model_id: str) -> int:
        return len(self._completion.get((stage, template_id, model_id), ()))

    def _mean(self, table: dict, stage: str, template_id: str, model_id: str) -> float | None:
        values = table.get((stage, template_id, model_id)) or table.get((stage, model_id))
        return sum(values) / len(values) if values else None

    def completion_tokens(self, stage: str, template_id: str, model_id: str) -> float | None:
        return self._mean(self._completion, stage, template_id, model_id)

    def parsed_bytes(self, stage: str, template_id: str, model_id: str) -> float | None:
        return self._mean(self._parsed, stage, template_id, model_id)

    def bytes_per_token(self, model_id: str) -> float:
        b = self._bytes.get(model_id)
        return b[0] / b[1] if b and b[1] else DEFAULT_BYTES_PER_TOKEN


ESTIMATE_COLUMNS = ("stage", "llm_model_id", "calls", "prompt_tokens", "completion_tokens", "completion_basis",
                    "cost_usd", "cost_max_usd")


def _sum(values: Iterable[float | None]) -> float | None:
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def estimate_rows(calls: list[CallEstimate]) -> list[dict]:
    """Calls still to make per stage and model, then one total row (stage and model ``(all)``).

    ``cost_usd`` is the expected cost, ``cost_max_usd`` the most it can cost (every call at its
    bound, what the spend cap reserves); both None (unknown) when a model has no prices.
    ``completion_basis`` says where the completion tokens come from: ``history`` (what the model
    produced on the stage before), ``max_tokens`` (an upper bound), or ``mixed``.
    """
    groups: dict[tuple[str, str], list[CallEstimate]] = {}
    for c in calls:
        groups.setdefault((c.stage, c.model_id), []).append(c)

    def row(stage: str, model: str, cs: list[CallEstimate]) -> dict:
        basis = {c.from_history for c in cs}
        return {"stage": stage, "llm_model_id": model, "calls": len(cs),
                "prompt_tokens": round(sum(c.prompt_tokens for c in cs)),
                "completion_tokens": round(sum(c.completion_tokens for c in cs)),
                "completion_basis": "mixed" if len(basis) > 1 else ("history" if basis == {True} else "max_tokens"),
                "cost_usd": _sum(c.cost for c in cs), "cost_max_usd": _sum(c.bound for c in cs),
                "cost_sync_usd": _sum(c.cost_sync for c in cs), "cost_batch_usd": _sum(c.cost_batch for c in cs)}

    order = {"draft": 0, "essay": 1, "evaluation": 2}
    rows = [row(s, m, cs) for (s, m), cs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1]))]
    rows.append(row(ALL, ALL, calls) if calls else {**row(ALL, ALL, []), "completion_basis": ""})
    return rows


def format_estimate(cohort_id: str, rows: list[dict]) -> str:
    """The estimate as a table for people (``daydream estimate``, and ``daydream run`` before it starts)."""
    total = rows[-1]
    if not total["calls"]:
        return f"cohort {cohort_id}: no model calls left to make\n"
    head = f"  {'stage':<11}{'model':<22}{'calls':>7}{'prompt tok':>12}{'compl. tok':>12}  {'basis':<11}" \
           f"{'cost':>12}{'at most':>12}"
    lines = [f"cohort {cohort_id}: model calls still to make (estimate)", head]
    for r in rows:
        if r is total:
            lines.append("  " + "-" * (len(head) - 2))
        lines.append(f"  {r['stage']:<11}{r['llm_model_id']:<22}{r['calls']:>7,}{r['prompt_tokens']:>12,}"
                     f"{r['completion_tokens']:>12,}  {r['completion_basis']:<11}{usd(r['cost_usd']):>12}"
                     f"{usd(r['cost_max_usd']):>12}")
    if total.get("cost_sync_usd") and total.get("cost_batch_usd") is not None:  # a free simulator saves nothing
        saving = total["cost_sync_usd"] - total["cost_batch_usd"]
        lines.append(f"  made one by one: {usd(total['cost_sync_usd'])}; as provider batch jobs: "
                     f"{usd(total['cost_batch_usd'])} (saves {usd(saving)}; answers within 24 h; "
                     "`daydream run --batch`)")
    unknown = sorted({r["llm_model_id"] for r in rows[:-1] if r["cost_usd"] is None})
    if unknown:
        lines.append(f"  cost unknown: no prices in llm_models.csv for {', '.join(unknown)}")
    if any(r["completion_basis"] != "history" for r in rows[:-1]):
        lines.append("  basis max_tokens: no earlier calls of that model on that stage, so completions are "
                     "counted at their limit (an upper bound)")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------
# Spend of calls made (status, reports)

SPEND_COLUMNS = ("stage", "llm_model_id", "calls", "prompt_tokens", "completion_tokens", "cost_usd",
                 "cost_reported_usd", "cost_estimated_usd", "n_cost_reported", "n_cost_estimated",
                 "n_cost_unknown", "simulated")


def spend_rows(records: Iterable[dict]) -> list[dict]:
    """Per stage and model, then per stage (model ``(all)``), then the cohort (both ``(all)``).

    ``records``: one per recorded model call (copy-mode generations call none), with stage,
    llm_model_id, prompt_tokens, completion_tokens, cost_usd, cost_source and simulated.
    ``cost_usd`` is the whole cost, None (unknown) when any call's cost is unknown: a partial
    sum shown as the total would understate it; the known parts are in the other columns.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        for key in ((r["stage"], r["llm_model_id"]), (r["stage"], ALL), (ALL, ALL)):
            groups.setdefault(key, []).append(r)

    def part(rs, source):
        return sum(r["cost_usd"] for r in rs if r["cost_source"] == source)

    rows = []
    for (stage, model), rs in groups.items():
        n = {s: sum(1 for r in rs if r["cost_source"] == s) for s in COST_SOURCES}
        rows.append({"stage": stage, "llm_model_id": model, "calls": len(rs),
                     "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in rs),
                     "completion_tokens": sum(r["completion_tokens"] or 0 for r in rs),
                     "cost_usd": None if n[UNKNOWN] else part(rs, REPORTED) + part(rs, ESTIMATED),
                     "cost_reported_usd": part(rs, REPORTED), "cost_estimated_usd": part(rs, ESTIMATED),
                     "n_cost_reported": n[REPORTED], "n_cost_estimated": n[ESTIMATED], "n_cost_unknown": n[UNKNOWN],
                     "simulated": any(r["simulated"] for r in rs)})
    order = {"draft": 0, "essay": 1, "evaluation": 2, ALL: 3}
    rows.sort(key=lambda r: (order.get(r["stage"], 9), r["llm_model_id"] == ALL, r["llm_model_id"]))
    return rows


def call_record(raw_md: dict, prices: Prices | None) -> dict | None:
    """What ``spend_rows`` needs from one ``raw_metadata.json``; None when no model was called.

    Records written before ``cost_source`` existed are labelled by comparing their cost with the
    catalog prices.
    """
    if not raw_md or raw_md.get("mode") != "llm":
        return None
    cost = raw_md.get("cost_usd")
    cost = float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None
    source = raw_md.get("cost_source")
    if source not in COST_SOURCES:
        # Records without a cost_source hold the catalog-price fallback as the cost itself: a
        # cost equal to the price arithmetic is that fallback, not a reported figure.
        estimated = token_cost(prices, raw_md.get("prompt_tokens"), raw_md.get("completion_tokens")) if prices else None
        fallback = cost is not None and estimated is not None and math.isclose(cost, estimated, rel_tol=1e-12)
        cost, source = cost_and_source(None if fallback else cost, estimated)
    if cost is None:
        source = UNKNOWN
    return {"stage": raw_md.get("stage") or "unknown", "llm_model_id": raw_md.get("llm_model_id") or "unknown",
            "prompt_tokens": raw_md.get("prompt_tokens"), "completion_tokens": raw_md.get("completion_tokens"),
            "cost_usd": cost, "cost_source": source, "simulated": bool(raw_md.get("simulated"))}
