"""One generation's work (contract §5): prompt → raw → validate → parsed, and its state.

State is decided by ``state.classify`` from what the store records and what the generation's
*current* inputs render (template text, parent output, concept descriptions, model, parser and
scale); ``state_of`` gathers those, parent first. File existence is never completeness, and
editing a template or regenerating a parent makes every affected child stale, with no bookkeeping.

A generation's files are committed as one group once its work is over (``store.atomic_write_group``:
every file fsynced before any is renamed, then renamed in order, each ``*_metadata.json`` after
its content), and each metadata records the SHA-256 of the content it describes, so a crash
between two renames is detected and never mistaken for a finished phase. A valid raw response is reused when the prompt is unchanged
(re-parsing costs no model call); an invalid one (truncated, empty, too short) never is.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from pipeline.store import claims, spend
from pipeline import config
from pipeline.design import structured
from pipeline.design.catalog import Catalog, load_catalog
from pipeline.errors import DaydreamError, ParseError
from pipeline.store.ledger import Budget, reserve_call
from pipeline.llm import Provider, make_provider, require_keys
from pipeline.llm.base import Completion, CompletionRequest, GenerationContext
from pipeline.design.parsers import DEFAULT_SCORE_LABEL, parse
from pipeline.design.render import draft_context, essay_context, evaluation_context, render
from pipeline.store.state import BLOCKED, DONE, FAILED, PENDING, STALE, CurrentInputs, Outcome, State, classify
from pipeline.store import (PARENT_STAGE, DataPaths, atomic_write_group, dumps_json, file_token, parsed_metadata,
                            raw_metadata, read_json, read_text, remove_stale_temporaries, utc_stamp)

PREVIEW_CHARS = 400
PARSE_FAILED = "parser "  # how a parse failure's reason starts: the raw response is kept and valid


def is_parse_failure(reason: str | None) -> bool:
    """Whether a failure reason is a parse failure (re-read, never re-called, by a re-run or reparse)."""
    return bool(reason) and reason.startswith(PARSE_FAILED) and " failed: " in reason


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def phase_json(path) -> dict | None:
    """A phase's metadata (raw or parsed); a corrupt one counts as absent, so the phase is redone
    instead of failing the run (phase files are always regenerable)."""
    try:
        return read_json(path)
    except DaydreamError:
        return None


@dataclass
class Runtime:
    """What generations need: paths, catalog, provider clients, and the classifier's caches.

    One per data root. A Luigi worker forks a process per task when it has several: the child
    inherits the catalog and the warm caches (plain data), but opens its own provider clients
    and executor (connection pools and threads do not survive a fork), keyed by process id.
    """

    paths: DataPaths
    catalog: Catalog
    _providers: dict[tuple[int, str], Provider] = field(default_factory=dict)
    _locks: dict[int, threading.Lock] = field(default_factory=dict)
    executors: dict[int, object] = field(default_factory=dict)  # process id -> executor.Executor
    _endpoints: dict[str, str] = field(default_factory=dict)
    _prices: dict[str, spend.Prices] = field(default_factory=dict)
    _calls_per_task: dict[str, int] = field(default_factory=dict)
    _stage_settings: dict[str, config.StageSettings] = field(default_factory=dict)
    _claim_timeout: list[float] = field(default_factory=list)

    def provider(self, name: str) -> Provider:
        pid = os.getpid()
        with self.lock():
            if (pid, name) not in self._providers:
                self._providers[(pid, name)] = make_provider(config.provider_settings(name))
            return self._providers[(pid, name)]

    def providers_here(self) -> list[Provider]:
        """The providers this process has opened."""
        return [p for (pid, _), p in self._providers.items() if pid == os.getpid()]

    def lock(self) -> threading.Lock:
        """This process's lock over the runtime's lazily built parts."""
        return self._locks.setdefault(os.getpid(), threading.Lock())

    def endpoint(self, model_id: str) -> str:
        """The ``[llm.<name>]`` endpoint a catalog model calls (``config.endpoint_for``), once per model."""
        if model_id not in self._endpoints:
            self._endpoints[model_id] = config.endpoint_for(self.catalog.model(model_id))
        return self._endpoints[model_id]

    def prices(self, model_id: str) -> spend.Prices:
        """``spend.Prices.of`` a catalog model, once per model: whether it is free (simulated)
        is a config read."""
        if model_id not in self._prices:
            self._prices[model_id] = spend.Prices.of(self.catalog.model(model_id))
        return self._prices[model_id]

    def calls_per_task(self, endpoint: str) -> int:
        """``config.calls_per_task``, once per endpoint: every generation task asks, and a config read is not free."""
        if endpoint not in self._calls_per_task:
            self._calls_per_task[endpoint] = config.calls_per_task(endpoint)
        return self._calls_per_task[endpoint]

    def stage_settings(self, stage: str) -> config.StageSettings:
        """``config.stage_settings``, once per stage: every call asks (three config reads)."""
        if stage not in self._stage_settings:
            self._stage_settings[stage] = config.stage_settings(stage)
        return self._stage_settings[stage]

    def claim_timeout(self) -> float:
        """``config.claim_timeout``, read once."""
        if not self._claim_timeout:
            self._claim_timeout.append(config.claim_timeout())
        return self._claim_timeout[0]

    def require_keys(self, providers) -> None:
        require_keys([config.provider_settings(p) for p in sorted(set(providers))])

    # Per-process caches of what the classifier reads. A generation's metadata.json never changes
    # in what is read here (stage, template, model, mode and parent are its id's signature); a
    # state is reused only while the files it was decided from are unchanged (see state_of).
    _metadata: dict[tuple[str, str], dict] = field(default_factory=dict)
    _dirs: dict[tuple[str, str], str] = field(default_factory=dict)
    _states: dict[tuple[str, str], tuple[tuple, State]] = field(default_factory=dict)
    _catalog_files: dict[tuple, list[str]] = field(default_factory=dict)
    settled: dict[tuple[str, str, str], State] = field(default_factory=dict)  # see run_state

    def gen_dir(self, stage: str, gen_id: str) -> str:
        key = (stage, gen_id)
        d = self._dirs.get(key)
        if d is None:
            self.paths.gen_dir(stage, gen_id)  # validates the stage and the id (raises)
            d = self._dirs[key] = f"{self.paths.gens}/{stage}/{gen_id}"  # a string join: pathlib's costs more
        return d

    def gen_file(self, stage: str, gen_id: str, name: str) -> str:
        """``DataPaths.gen_file`` from the cached directory (a generation names its files ~10 times)."""
        return f"{self.gen_dir(stage, gen_id)}/{name}"

    def keep_metadata(self, stored: list[tuple[str, str, dict]]) -> None:
        """Keep generations' metadata as this process has just stored them (``compile_cohort``'s
        ``seeded``): the run that compiled reads none back, nor does its executor's process,
        forked afterwards."""
        for stage, gen_id, md in stored:
            self._metadata[(stage, gen_id)] = md

    def keep_settled(self, stage: str, gen_id: str, since: str, st: State) -> None:
        """Keep ``st`` for the rest of the run that started at ``since`` once it is settled for
        it (see ``run_state``): what the generation's task and chunk then ask."""
        if since and st.settled(since):
            self.settled[(stage, gen_id, since)] = st


_RUNTIMES: dict[str, Runtime] = {}


def forget_runtimes() -> None:
    """Drop every runtime of this process and stop their executors (tests and benchmarks that
    change the data root or the config in-process)."""
    for rt in _RUNTIMES.values():
        for ex in rt.executors.values():
            ex.close()
    _RUNTIMES.clear()


def runtime(paths: DataPaths | None = None) -> Runtime:
    """The runtime of ``paths`` (default: the configured data root), built once per data root
    (and inherited by forked workers)."""
    paths = paths or config.data_paths()
    key = str(paths.root)
    rt = _RUNTIMES.get(key)
    if rt is None:
        rt = _RUNTIMES[key] = Runtime(paths, load_catalog(paths))
    return rt


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Inputs:
    """Everything a generation's output depends on, resolved from the current store and catalog."""

    metadata: dict
    prompt: str
    parser: str
    scale: tuple[float, float]
    model_id: str | None
    template_sha256: str | None = None  # recorded so `check` can say *why* an output is stale
    parent_sha256: str | None = None
    score_label: str = DEFAULT_SCORE_LABEL
    # structured output: the JSON schema the answer follows (stated at the end of ``prompt``, so
    # part of the fingerprint through it); None for free text
    json_schema: dict | None = field(default=None, hash=False, compare=False)

    @property
    def fingerprint(self) -> str:
        lo, hi = self.scale
        parts = [sha256(self.prompt), self.model_id or "copy", self.parser, f"{lo:g}", f"{hi:g}"]
        if self.score_label != DEFAULT_SCORE_LABEL:  # the default leaves stores made before labels current
            parts.append(self.score_label)
        return sha256("\0".join(parts))


def metadata(rt: Runtime, stage: str, gen_id: str) -> dict:
    """A generation's metadata.json (read once per process: what is read of it never changes)."""
    md = rt._metadata.get((stage, gen_id))
    if md is not None:
        return md
    md = read_json(rt.gen_file(stage, gen_id, "metadata.json"))
    if md is None:
        raise DaydreamError(
            "store", f"{stage} {gen_id} has no metadata.json (compile the cohort that includes it)",
            path=rt.gen_file(stage, gen_id, "metadata.json"),
        )
    for key in ("stage", "template_id", "mode"):
        if key not in md:
            raise DaydreamError("store", f"corrupt metadata: no {key!r}", path=rt.gen_file(stage, gen_id, "metadata.json"))
    rt._metadata[(stage, gen_id)] = md
    return md



def parent_output(rt: Runtime, stage: str, md: dict) -> str | None:
    """The parent's parsed text if the parent is complete, else None."""
    pstage = PARENT_STAGE[stage]
    pid = md.get("parent_gen_id")
    if not pid:
        raise DaydreamError("store", f"{stage} {md.get('gen_id')} has no parent_gen_id", path=rt.gen_file(stage, md["gen_id"], "metadata.json"))
    pmeta = phase_json(rt.gen_file(pstage, pid, "parsed_metadata.json"))
    text = read_text(rt.gen_file(pstage, pid, "parsed.txt"))
    if not pmeta or not pmeta.get("success") or text is None or pmeta.get("parsed_sha256") != sha256(text):
        return None
    return text


def resolve_inputs(rt: Runtime, stage: str, gen_id: str, md: dict | None = None) -> Inputs | None:
    """Current inputs of a generation, or None when its parent's output is not intact."""
    md = md or metadata(rt, stage, gen_id)
    template = rt.catalog.template(stage, md["template_id"])
    if md["mode"] == "copy":
        text = parent_output(rt, stage, md)
        return None if text is None else Inputs(md, text, "identity", (0.0, 0.0), None, None, sha256(text))
    if stage == "draft":
        combo = md.get("combo") or {}
        level = combo.get("level", "paragraph")
        concepts = [(rt.catalog.concepts[c].name if c in rt.catalog.concepts else c, rt.catalog.concept_text(c, level))
                    for c in combo.get("concept_ids", [])]
        if not concepts:
            raise DaydreamError("store", f"draft {gen_id} metadata has no combo concepts", path=rt.gen_file(stage, gen_id, "metadata.json"))
        context = draft_context(concepts)
        parent_sha = None
    else:
        text = parent_output(rt, stage, md)
        if text is None:
            return None
        context = essay_context(text) if stage == "essay" else evaluation_context(text)
        parent_sha = sha256(text)
    source = template.text
    if source is None:
        raise DaydreamError("catalog", f"{stage} template {template.id!r} has no template file", path=template.path)
    prompt = render(source, context, stage=stage, template_id=template.id)
    scale = (template.score_min, template.score_max) if stage == "evaluation" else (0.0, 0.0)
    label = template.score_label if stage == "evaluation" else DEFAULT_SCORE_LABEL
    schema = None
    if stage == "evaluation" and _asks_json(rt, template, md):
        schema = structured.score_schema(*scale)
        prompt = structured.with_schema(prompt, schema)
    return Inputs(md, prompt, template.parser, scale, md.get("llm_model_id"), sha256(source), parent_sha, label, schema)


def _asks_json(rt: Runtime, template, md: dict) -> bool:
    """Whether an evaluation asks for structured output: its template or its model says json."""
    model = rt.catalog.models.get(md.get("llm_model_id") or "")
    return template.output_format == "json" or (model is not None and model.output_format == "json")


def state_of(rt: Runtime, stage: str, gen_id: str, memo: dict | None = None) -> State:
    """The generation's state (the one classifier), its ancestors classified first.

    ``memo`` shares ancestors' states across the generations of one pass (a cohort's status, a
    chunk). Across passes a state is recomputed only when one of the files it was decided from
    (this generation's or an ancestor's parsed output and metadata) changed: a ``stat`` each.
    """
    return _state_and_token(rt, stage, gen_id, {} if memo is None else memo)[0]


def run_state(rt: Runtime, stage: str, gen_id: str, since: str, memo: dict | None = None) -> State:
    """The generation's state for the run that started at ``since``. Once settled for that run
    it is kept for the rest of it, with no look at the store: the run settles a parent before
    its children, so nothing the run does afterwards unsettles it, and a chunk's generations are
    looked at several times as it finishes, while no call is in flight."""
    st = rt.settled.get((stage, gen_id, since))
    if st is None:
        st = state_of(rt, stage, gen_id, memo)
        rt.keep_settled(stage, gen_id, since, st)
    return st


def is_done(rt: Runtime, stage: str, gen_id: str, memo: dict | None = None) -> bool:
    """Whether a generation is done; one not compiled yet (a search round just planned) is not."""
    if (stage, gen_id) not in rt._metadata and not os.path.exists(rt.gen_file(stage, gen_id, "metadata.json")):
        return False
    return state_of(rt, stage, gen_id, memo).kind == DONE


def _state_and_token(rt: Runtime, stage: str, gen_id: str, memo: dict) -> tuple[State, tuple]:
    key = (stage, gen_id)
    if key in memo:
        return memo[key]
    md = metadata(rt, stage, gen_id)
    parent_id = md.get("parent_gen_id") if stage != "draft" else None
    parent = parent_token = None
    if stage != "draft":
        if not parent_id:
            raise DaydreamError("store", f"{stage} {gen_id} has no parent_gen_id",
                                path=rt.gen_file(stage, gen_id, "metadata.json"))
        parent, parent_token = _state_and_token(rt, PARENT_STAGE[stage], parent_id, memo)
    outcome_token = file_token(rt.gen_file(stage, gen_id, "parsed_metadata.json"))
    # with no outcome recorded the state is pending (or blocked) whatever the catalog renders:
    # a fresh generation is looked at with no look at its template's and concepts' files, nor
    # at a parsed output, which only a recorded outcome vouches for
    token = (outcome_token, file_token(rt.gen_file(stage, gen_id, "parsed.txt")) if outcome_token else None,
             parent_token, _catalog_token(rt, stage, md, memo) if outcome_token else None)
    cached = rt._states.get(key)
    if cached is not None and cached[0] == token:
        st = cached[1]
    else:
        st = _classify(rt, stage, gen_id, md, parent, parent_id, recorded=outcome_token is not None)
        rt._states[key] = (token, st)
    memo[key] = (st, token)
    return st, token


def _catalog_token(rt: Runtime, stage: str, md: dict, memo: dict) -> tuple:
    """The state of the catalog files a generation renders from: its template and, for a draft,
    its concepts' descriptions (every level ``concept_text`` may fall back to). Looked at once
    per pass: the generations of a pass share a handful of templates and concepts."""
    combo = (md.get("combo") or {}) if stage == "draft" else {}
    key = (stage, md["template_id"], combo.get("level"), tuple(combo.get("concept_ids", ())))
    seen = memo.setdefault(_CATALOG_TOKENS, {})
    token = seen.get(key)
    if token is None:
        token = seen[key] = tuple(file_token(f) for f in _catalog_files(rt, stage, md["template_id"], key))
    return token


_CATALOG_TOKENS = ("catalog", "tokens")  # the memo's entry for this pass's catalog file tokens


def _catalog_files(rt: Runtime, stage: str, template_id: str, key: tuple) -> list[str]:
    files = rt._catalog_files.get(key)
    if files is None:
        template = rt.catalog.template(stage, template_id)
        files = [] if template.path is None else [str(template.path)]
        if stage == "draft":
            level = key[2] or "paragraph"
            levels = [level] + [lv for lv in ("paragraph", "sentence") if lv != level]
            files += [rt.catalog.description_file(lv, c) for c in key[3] for lv in levels]
        rt._catalog_files[key] = files
    return files


def _classify(rt: Runtime, stage: str, gen_id: str, md: dict, parent: State | None, parent_id: str | None, *,
              recorded: bool) -> State:
    """``recorded``: whether the outcome's file was there when its token was taken; when it was
    not, it is not opened (a file written since shows as a new token, and is classified then)."""
    outcome = _recorded_outcome(rt, stage, gen_id) if recorded else None
    current = None
    # nothing recorded is pending whatever the inputs render to: a cohort's fresh generations
    # are classified without rendering their prompts
    if outcome is not None and (parent is None or parent.kind == DONE):
        inputs = resolve_inputs(rt, stage, gen_id, md)
        if inputs is None:  # the parent's output vanished since it was classified
            parent = State(STALE, f"the output of {parent_id} changed while being read")
        else:
            current = CurrentInputs(inputs.fingerprint, inputs.template_sha256, inputs.parent_sha256)
    return classify(outcome, parent, current, parent_id=parent_id, template_id=md.get("template_id"))


def _recorded_outcome(rt: Runtime, stage: str, gen_id: str) -> Outcome | None:
    pm = phase_json(rt.gen_file(stage, gen_id, "parsed_metadata.json"))
    if not pm:
        return None
    intact = False
    if pm.get("success"):
        text = read_text(rt.gen_file(stage, gen_id, "parsed.txt"))
        intact = text is not None and pm.get("parsed_sha256") == sha256(text)
    return Outcome(success=bool(pm.get("success")), input_fingerprint=pm.get("input_fingerprint"),
                   output_intact=intact, error=pm.get("error"), finished_at=pm.get("finished_at"),
                   template_sha256=pm.get("template_sha256"), parent_sha256=pm.get("parent_sha256"))


# ---------------------------------------------------------------------------------------------
# Running


def validate_raw(text: str, completion: Completion | None, min_lines: int) -> str | None:
    """The reason a raw response must not be used, or None when it is acceptable."""
    if completion is not None and completion.truncated:
        return f"truncated (finish_reason={completion.finish_reason})"
    if not text.strip():
        return "empty output"
    lines = sum(1 for line in text.splitlines() if line.strip())
    if lines < min_lines:
        return f"too few non-empty lines ({lines} < {min_lines})"
    return None


Files = list[tuple[str, "bytes | None"]]  # a commit: (path, content or None to remove it), in order
Commit = Callable[[Files], Awaitable[int]]


async def commit_here(files: Files) -> int:
    """Commit on the caller's thread (a generation run without an executor's writer)."""
    return atomic_write_group(files)


async def generate(rt: Runtime, stage: str, gen_id: str, status: Callable[[str], None] = lambda m: None,
                   budget: Budget | None = None, on_call: Callable[[float], None] = lambda seconds: None,
                   since: str = "", commit: Commit = commit_here) -> State:
    """Bring a generation to ``done`` if it can be: calls the model only when no valid raw exists.

    Returns its state afterwards: ``done``, ``failed`` (the reason is recorded in the store) or
    ``blocked`` (an ancestor failed; nothing is written). A failed generation is an outcome, not
    an exception; only a store that cannot record the outcome raises. Under a ``budget`` a call
    that does not fit is not made: the generation stays ``pending`` with reason
    ``spend.BUDGET_REACHED`` and nothing is written. ``on_call`` hears how long a model call
    that answered took. ``commit`` puts the generation's files in place (``store.atomic_write_group``)
    and returns once they are: an executor's writes them on its writer's threads.

    The work is done under the generation's claim (``claims``), so no two runs (of any
    scheduler, process or machine sharing the data root) call for it at once: one claimed
    elsewhere is waited for and its outcome, once written, is this run's too (``since``: the
    run, whose failures count as settled).
    """
    # one done or blocked needs no claim (the generations of a chunk started behind another
    # come here not looked at). One with no outcome recorded cannot be done, and is looked at
    # under the claim: its ancestors' walk is made once, not twice.
    if os.path.exists(rt.gen_file(stage, gen_id, "parsed_metadata.json")):
        st = state_of(rt, stage, gen_id)
        if st.kind in (DONE, BLOCKED):
            return st
    timeout = rt.claim_timeout()
    claim = await claims.acquire(rt.gen_dir(stage, gen_id), since, timeout,
                                 waiting=lambda why: status(f"{stage} · waiting: {why}"))
    try:
        # looked at again under the claim: the owner waited for, or one that finished just
        # before this claim was made, may have settled it
        memo: dict = {}
        st = state_of(rt, stage, gen_id, memo)
        if st.kind in (DONE, BLOCKED) or st.settled(since):
            return st
        return await _generate(rt, stage, gen_id, status, budget, on_call, commit, memo)
    finally:
        claims.release(claim, timeout)  # after the commit: it is awaited even when cancelled


async def _generate(rt: Runtime, stage: str, gen_id: str, status: Callable[[str], None],
                    budget: Budget | None, on_call: Callable[[float], None], commit: Commit,
                    memo: dict) -> State:
    """The generation's work; all its files are committed at the end as one group (prompt, raw
    and its record, parsed and its record: each record after its content), so the model call
    goes out with nothing written and a kill before the commit leaves the generation as it was.
    ``memo``: the states its caller has just looked at (its parent's among them)."""
    md = metadata(rt, stage, gen_id)
    parent_id = md.get("parent_gen_id") if stage != "draft" else None
    if parent_id and state_of(rt, PARENT_STAGE[stage], parent_id, memo).kind != DONE:
        # never generate against a parent that is about to change (the runner runs parents first)
        raise DaydreamError("store", f"{stage} {gen_id}: parent {parent_id} is not done")
    # the tokens of what the inputs are read from, taken before they are read (see ``_remember``)
    inputs_token = (memo[(PARENT_STAGE[stage], parent_id)][1] if parent_id else None,
                    _catalog_token(rt, stage, md, memo))
    inputs = resolve_inputs(rt, stage, gen_id, md)
    if inputs is None:  # the parent's output changed since it was classified
        raise DaydreamError("store", f"{stage} {gen_id}: parent {parent_id} is not done")
    remove_stale_temporaries(rt.gen_dir(stage, gen_id))
    files: Files = [(rt.gen_file(stage, gen_id, "prompt.txt"), inputs.prompt.encode())]

    if md["mode"] == "copy":
        status(f"{stage} · {md['template_id']} · copy")
        simulated = _parent_simulated(rt, stage, md)
        prompt_sha = sha256(inputs.prompt)
        now = utc_stamp()
        files += [(rt.gen_file(stage, gen_id, "raw.txt"), inputs.prompt.encode()),
                  (rt.gen_file(stage, gen_id, "raw_metadata.json"), _json(raw_metadata(
                      gen_id=gen_id, stage=stage, mode="copy", llm_model_id=None, model_slug=None, provider=None,
                      simulated=simulated, finish_reason=None, truncated=False, prompt_tokens=0,
                      completion_tokens=0, cost_usd=0.0, cost_source=None, duration_s=0.0, attempts=0,
                      started_at=now, finished_at=now, prompt_sha256=prompt_sha, raw_sha256=prompt_sha, valid=True,
                      invalid_reason=None)))]
        parsed, st = parsed_files(rt, stage, gen_id, inputs, inputs.prompt, simulated=simulated)
        await commit(files + parsed)
        return _remember(rt, stage, gen_id, st, inputs_token)

    model = rt.catalog.model(inputs.model_id)
    kept = reusable_raw(rt, stage, gen_id, inputs)
    if kept is None:
        request = completion_request(rt, stage, inputs)
        started = utc_stamp()
        endpoint = rt.endpoint(model.id)
        prices = rt.prices(model.id)
        slot = await reserve_call(budget, stage, gen_id, model.id, endpoint,
                            spend.call_bound(prices, len(inputs.prompt.encode()), request.max_tokens))
        if slot is None:
            return State(PENDING, spend.BUDGET_REACHED)
        try:
            completion = await rt.provider(endpoint).generate(request, on_attempt=lambda n, of: status(
                f"{stage} · {md['template_id']} · {model.id} · calling {endpoint}, attempt {n}/{of}"))
        except DaydreamError as exc:
            slot.settle(0.0)  # providers do not bill a request they answered with an error
            failure, st = failure_files(rt, stage, gen_id, inputs, exc.message, "", simulated=model.simulated)
            await commit(files + failure)
            return st
        except BaseException:
            slot.abandon()  # interrupted mid-call: it may have been billed
            raise
        on_call(completion.duration_s)
        cost = _call_cost(prices, completion)
        slot.settle(cost[0])
        status(f"{stage} · {md['template_id']} · {model.id} · parsing ({inputs.parser})")
        answer, st = call_files(rt, stage, gen_id, inputs, completion, cost=cost, started=started)
        await commit(answer)
        return _remember(rt, stage, gen_id, st, inputs_token)
    status(f"{stage} · {md['template_id']} · {model.id} · parsing ({inputs.parser})")
    parsed, st = parsed_files(rt, stage, gen_id, inputs, kept[0], simulated=bool(kept[1].get("simulated")))
    await commit(files + parsed)
    return _remember(rt, stage, gen_id, st, inputs_token)


def _remember(rt: Runtime, stage: str, gen_id: str, st: State, inputs_token: tuple) -> State:
    """A generation just committed ``done`` kept as the classifier's cached state, under the
    tokens it would compute: its children, classified next, then read none of its files nor
    render its prompt again to find it done. The tokens of its inputs (its parent's state and
    its catalog files) were taken before they were read, so any change since shows as a new
    token and it is classified again from its files."""
    if st.kind == DONE:
        outcome = file_token(rt.gen_file(stage, gen_id, "parsed_metadata.json"))
        if outcome is not None:
            rt._states[(stage, gen_id)] = ((outcome, file_token(rt.gen_file(stage, gen_id, "parsed.txt")),
                                            *inputs_token), st)
    return st


def reusable_raw(rt: Runtime, stage: str, gen_id: str, inputs: Inputs) -> tuple[str, dict] | None:
    """The kept raw response and its metadata when they can be parsed instead of calling the
    model: valid, intact, from the same model and for the prompt the inputs render now."""
    raw_md = phase_json(rt.gen_file(stage, gen_id, "raw_metadata.json"))
    if raw_md is None:  # nothing kept (every fresh generation): raw.txt is not looked for
        return None
    raw = read_text(rt.gen_file(stage, gen_id, "raw.txt"))
    if (raw is not None and raw_md.get("valid") is True
            and raw_md.get("prompt_sha256") == sha256(inputs.prompt) and raw_md.get("llm_model_id") == inputs.model_id
            and raw_md.get("raw_sha256") == sha256(raw)):
        return raw, raw_md
    return None


def _concept_ids(rt: Runtime, stage: str, md: dict) -> tuple[str, ...]:
    """The concepts of the combo a generation descends from (its draft's), for the simulator."""
    while stage != "draft":
        stage = PARENT_STAGE[stage]
        md = metadata(rt, stage, md["parent_gen_id"])
    return tuple((md.get("combo") or {}).get("concept_ids", ()))


def _parent_simulated(rt: Runtime, stage: str, md: dict) -> bool:
    pm = phase_json(rt.gen_file(PARENT_STAGE[stage], md["parent_gen_id"], "parsed_metadata.json")) or {}
    return bool(pm.get("simulated"))


def _json(record: dict) -> bytes:
    return dumps_json(record).encode("utf-8")


# The records of a generation's outcome, as the files to commit (content before its metadata)
# and the state they make; committed by ``write_parsed`` / ``write_call`` here, or by ``generate``
# through its ``commit``.


def parsed_files(rt: Runtime, stage: str, gen_id: str, inputs: Inputs, raw: str, *, simulated: bool) -> tuple[Files, State]:
    """Parse ``raw``: parsed.txt then its metadata, or the parse failure's record."""
    lo, hi = inputs.scale
    try:
        parsed = parse(inputs.parser, raw, scale_min=lo, scale_max=hi, label=inputs.score_label)
    except ParseError as exc:
        return failure_files(rt, stage, gen_id, inputs, f"{PARSE_FAILED}{inputs.parser!r} failed: {exc.message}", raw,
                             simulated=simulated)
    pm = parsed_metadata(
        gen_id=gen_id, stage=stage, parser=inputs.parser, success=True, error=None, raw_tail_preview=None,
        simulated=simulated, input_fingerprint=inputs.fingerprint, parsed_sha256=sha256(parsed), finished_at=utc_stamp(),
        template_sha256=inputs.template_sha256, parent_sha256=inputs.parent_sha256,
        score=float(parsed) if stage == "evaluation" else None, scale=inputs.scale)
    return [(rt.gen_file(stage, gen_id, "parsed.txt"), parsed.encode("utf-8")),
            (rt.gen_file(stage, gen_id, "parsed_metadata.json"), _json(pm))], State(DONE)


def failure_files(rt: Runtime, stage: str, gen_id: str, inputs: Inputs, reason: str, raw: str, *,
                  simulated: bool) -> tuple[Files, State]:
    """Why a generation failed; parsed.txt removed first, so nothing stale looks like output."""
    pm = parsed_metadata(
        gen_id=gen_id, stage=stage, parser=inputs.parser, success=False, error=reason,
        raw_tail_preview=raw[-PREVIEW_CHARS:], simulated=simulated, input_fingerprint=inputs.fingerprint,
        parsed_sha256=None, finished_at=utc_stamp(), template_sha256=inputs.template_sha256,
        parent_sha256=inputs.parent_sha256, scale=inputs.scale)
    return [(rt.gen_file(stage, gen_id, "parsed.txt"), None),
            (rt.gen_file(stage, gen_id, "parsed_metadata.json"), _json(pm))], State(FAILED, reason, pm["finished_at"])


def call_files(rt: Runtime, stage: str, gen_id: str, inputs: Inputs, completion: Completion, *,
               cost: tuple[float | None, str], started: str, batch_job: dict | None = None) -> tuple[Files, State]:
    """A model call's answer: prompt.txt, raw.txt then its record, then the parse (or, for an
    invalid answer, kept for inspection and never reused, the failure)."""
    raw = completion.text  # CRLF already normalised by the provider
    reason = validate_raw(raw, completion, rt.stage_settings(stage).min_lines)
    files: Files = [
        (rt.gen_file(stage, gen_id, "prompt.txt"), inputs.prompt.encode("utf-8")),
        (rt.gen_file(stage, gen_id, "raw.txt"), raw.encode("utf-8")),
        (rt.gen_file(stage, gen_id, "raw_metadata.json"), _json(raw_metadata(
            gen_id=gen_id, stage=stage, mode="llm", llm_model_id=inputs.model_id, model_slug=completion.model_slug,
            provider=completion.provider, simulated=completion.simulated, finish_reason=completion.finish_reason,
            truncated=completion.truncated, prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens, cost_usd=cost[0], cost_source=cost[1],
            duration_s=round(completion.duration_s, 4), attempts=completion.attempts, started_at=started,
            finished_at=utc_stamp(), prompt_sha256=sha256(inputs.prompt), raw_sha256=sha256(raw),
            valid=reason is None, invalid_reason=reason, batch_job=batch_job)))]
    if reason is not None:
        outcome, st = failure_files(rt, stage, gen_id, inputs, reason, raw, simulated=completion.simulated)
    else:
        outcome, st = parsed_files(rt, stage, gen_id, inputs, raw, simulated=completion.simulated)
    return files + outcome, st


def write_parsed(rt: Runtime, stage: str, gen_id: str, inputs: Inputs, raw: str, *, simulated: bool) -> State:
    """Parse ``raw`` and commit parsed.txt, then its metadata (or record the parse failure).

    ``reparse`` calls it to read a kept response again with today's parser and scale (a run
    commits the same records, ``parsed_files``). A parse failure keeps the raw response valid,
    so neither a re-run nor ``reparse`` calls the model again for it."""
    files, st = parsed_files(rt, stage, gen_id, inputs, raw, simulated=simulated)
    atomic_write_group(files)
    return st


def write_call(rt: Runtime, stage: str, gen_id: str, inputs: Inputs, completion: Completion, *, started: str,
               prices: spend.Prices, batch_job: dict | None = None) -> State:
    """Commit a model call's answer made elsewhere (a provider batch job, ``batch_jobs.py``) as
    ``generate`` commits its own (``call_files``). Returns the state and leaves the cost in the
    raw record (``recorded_cost``)."""
    remove_stale_temporaries(rt.gen_dir(stage, gen_id))
    files, st = call_files(rt, stage, gen_id, inputs, completion, cost=_call_cost(prices, completion),
                           started=started, batch_job=batch_job)
    atomic_write_group(files)
    return st


def _call_cost(prices: spend.Prices, completion: Completion) -> tuple[float | None, str]:
    """(cost_usd, cost_source) of an answered call: the provider's figure, else tokens × prices."""
    return spend.cost_and_source(completion.cost_usd, spend.token_cost(
        prices, completion.prompt_tokens, completion.completion_tokens))


def write_call_failure(rt: Runtime, stage: str, gen_id: str, inputs: Inputs, reason: str) -> State:
    """Record that a model call made elsewhere (a batch job) failed for good, as ``generate`` does."""
    model = rt.catalog.model(inputs.model_id)
    files, st = failure_files(rt, stage, gen_id, inputs, reason, "", simulated=model.simulated)
    atomic_write_group(files)
    return st


def completion_request(rt: Runtime, stage: str, inputs: Inputs) -> CompletionRequest:
    """The request a generation sends for ``inputs``, whether as a call (``generate``) or as a
    line of a batch job."""
    md, model, settings = inputs.metadata, rt.catalog.model(inputs.model_id), rt.stage_settings(stage)
    return CompletionRequest(
        prompt=inputs.prompt, model_slug=model.model,
        temperature=model.temperature if model.temperature is not None else settings.temperature,
        max_tokens=model.max_tokens if model.max_tokens is not None else settings.max_tokens,
        context=GenerationContext(stage=stage, template_id=md["template_id"], parser=inputs.parser,
                                  replicate=int(md.get("replicate", 1)), concept_ids=_concept_ids(rt, stage, md),
                                  scale_min=inputs.scale[0], scale_max=inputs.scale[1]),
        json_schema=inputs.json_schema,
    )
