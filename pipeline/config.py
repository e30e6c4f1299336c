"""The one resolver for settings: data root, providers, stages, report thresholds.

Settings live in ``luigi.cfg`` (Luigi's own config parser, so a user layers their own file with
``LUIGI_CONFIG_PATH`` as usual). ``DAYDREAM_DATA_ROOT`` overrides the data root for every command
and task. Invalid values are ``config`` errors naming the section and key, never tracebacks.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

import luigi.configuration

from pipeline.errors import DaydreamError
from pipeline.llm.base import BatchSettings, ProviderSettings
from pipeline.store import DataPaths
from pipeline.design.structured import STRUCTURED_OUTPUT

DATA_ROOT_ENV = "DAYDREAM_DATA_ROOT"


@dataclass(frozen=True)
class StageSettings:
    temperature: float | None
    max_tokens: int | None
    min_lines: int


_STAGE_DEFAULTS = {
    "draft": StageSettings(temperature=0.9, max_tokens=4096, min_lines=3),
    "essay": StageSettings(temperature=0.7, max_tokens=8192, min_lines=5),
    "evaluation": StageSettings(temperature=0.2, max_tokens=2048, min_lines=1),
}


def use_project_config() -> None:
    """Make the ``luigi`` command read this project's luigi.cfg (providers, resources and the
    ``[retcode]`` exit codes) when started from another directory. A luigi.cfg in the working
    directory, and ``LUIGI_CONFIG_PATH``, still take precedence."""
    from luigi.configuration import LuigiConfigParser

    project_cfg = str(Path(__file__).resolve().parents[1] / "luigi.cfg")
    paths = LuigiConfigParser._config_paths  # Luigi's search list: later files win
    if os.path.exists("luigi.cfg") or not os.path.isfile(project_cfg) or project_cfg in paths:
        return
    paths.insert(paths.index("luigi.cfg") + 1 if "luigi.cfg" in paths else 0, project_cfg)
    LuigiConfigParser.reload()


def _cfg():
    return luigi.configuration.get_config()


def _where() -> str:
    """The config file(s) to name in an error message."""
    return os.environ.get("LUIGI_CONFIG_PATH") or "luigi.cfg"


def _boolean(text: str) -> bool:
    """A config flag, read as configparser (hence Luigi) reads its own: true/false, yes/no, on/off, 1/0."""
    value = configparser.ConfigParser.BOOLEAN_STATES.get(text.lower())
    if value is None:
        raise ValueError(text)
    return value


_boolean.__name__ = "boolean"


def _get(section: str, key: str, kind, default):
    cfg = _cfg()
    if not cfg.has_option(section, key):
        return default
    raw = cfg.get(section, key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = kind(str(raw).strip())
    except ValueError:
        raise DaydreamError(
            "config", f"[{section}] {key} = {raw!r} is not a valid {kind.__name__}", path=_where()
        ) from None
    return value


_RESOLVED: dict[tuple[str, str], Path] = {}  # (configured root, working dir) -> absolute root


def data_root() -> Path:
    """``DAYDREAM_DATA_ROOT`` > ``[daydream] data_root`` > ``data`` (relative to the working dir)."""
    root = os.environ.get(DATA_ROOT_ENV) or _get("daydream", "data_root", str, "data")
    key = (root, os.getcwd())
    if key not in _RESOLVED:  # resolving walks the path with a syscall per component: once
        _RESOLVED[key] = Path(root).expanduser().resolve()
    return _RESOLVED[key]


def data_paths() -> DataPaths:
    return DataPaths(data_root())


def stage_settings(stage: str) -> StageSettings:
    d = _STAGE_DEFAULTS[stage]
    section = f"stage.{stage}"
    s = StageSettings(
        temperature=_get(section, "temperature", float, d.temperature),
        max_tokens=_get(section, "max_tokens", int, d.max_tokens),
        min_lines=_get(section, "min_lines", int, d.min_lines),
    )
    if s.min_lines < 0 or (s.max_tokens is not None and s.max_tokens < 1):
        raise DaydreamError("config", f"[{section}] min_lines must be ≥ 0 and max_tokens ≥ 1", path=_where())
    return s


_PROVIDER_DEFAULTS = {
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "offline": (None, None),
}


def _configured(name: str) -> bool:
    return _cfg().has_section(f"llm.{name}") or name in _PROVIDER_DEFAULTS


def default_provider() -> str | None:
    """``[daydream] default_provider``: the endpoint for models whose provider has no section.

    Catalogs written for one gateway (every call through OpenRouter) name the vendor in their
    provider column; this lets them run unchanged."""
    name = _get("daydream", "default_provider", str, None)
    if name is not None and not _configured(name):
        raise DaydreamError(
            "config", f"[daydream] default_provider = {name} names no [llm.{name}] section", path=_where()
        )
    return name


def endpoint_for(model) -> str:
    """The ``[llm.<name>]`` endpoint a catalog model calls: the one resolver for it.

    Order: the model's ``endpoint`` column; its ``provider`` when that has a section (or is a
    built-in: openrouter, openai, offline); ``[daydream] default_provider``. Otherwise a
    ``config`` error naming the model, provider and catalog file, and the three ways to fix it.
    ``model.provider`` stays the vendor shown in reports.
    """
    where = model.catalog_path or "llm_models.csv"
    if model.endpoint:
        if not _configured(model.endpoint):
            raise DaydreamError(
                "config",
                f"model {model.id!r}: endpoint {model.endpoint!r} (endpoint column of {where}) "
                f"has no [llm.{model.endpoint}] section in {_where()}",
                path=where,
            )
        return model.endpoint
    if _configured(model.provider):
        return model.provider
    fallback = default_provider()
    if fallback is not None:
        return fallback
    p = model.provider
    raise DaydreamError(
        "config",
        f"model {model.id!r} has provider {p!r}, which has no [llm.{p}] section in {_where()}: "
        f"add an [llm.{p}] section, or an endpoint column in {where} naming the section to call, "
        "or set [daydream] default_provider = openrouter",
        path=where,
    )


def provider_settings(name: str) -> ProviderSettings:
    """Settings of the endpoint ``[llm.<name>]`` (a name from ``endpoint_for``); known providers
    have defaults, others must set base_url."""
    if not _configured(name):
        raise DaydreamError("config", f"no [llm.{name}] section for endpoint {name!r}", path=_where())
    section = f"llm.{name}"
    base_default, key_default = _PROVIDER_DEFAULTS.get(name, (None, None))
    base_url = _get(section, "base_url", str, base_default)
    api = _get(section, "api", str, "offline" if name == "offline" else "openai")
    if api != "offline" and not base_url:
        raise DaydreamError("config", f"provider {name!r} has no [{section}] base_url", path=_where())
    s = ProviderSettings(
        name=name,
        base_url=base_url,
        api_key_env=_get(section, "api_key_env", str, key_default) or None,
        concurrency=_get(section, "concurrency", int, 64 if name == "offline" else 4),
        timeout_s=_get(section, "timeout", float, 120.0),
        max_attempts=_get(section, "max_attempts", int, 5),
        backoff_base_s=_get(section, "backoff_base", float, 1.0),
        backoff_max_s=_get(section, "backoff_max", float, 60.0),
        api=api,
        structured_output=_get(section, "structured_output", str, "prompt"),
    )
    if s.structured_output not in STRUCTURED_OUTPUT:
        raise DaydreamError("config", f"[{section}] structured_output {s.structured_output!r} must be one of "
                                      f"{', '.join(STRUCTURED_OUTPUT)}", path=_where())
    if s.concurrency < 1 or s.max_attempts < 1 or s.timeout_s <= 0:
        raise DaydreamError("config", f"[{section}] concurrency, max_attempts and timeout must be positive", path=_where())
    return s


def force_batch() -> None:
    """``--batch`` (``daydream run``, ``RunCohort``): every provider of this process's run sends
    its calls as batch jobs, as ``[daydream] batch = true`` would (the config of this process and
    the workers it forks; other machines set it in their own luigi.cfg)."""
    cfg = _cfg()
    if not cfg.has_section("daydream"):
        cfg.add_section("daydream")
    cfg.set("daydream", "batch", "true")


def batch_settings(name: str) -> BatchSettings | None:
    """How ``[llm.<name>]`` makes batch jobs, or None when its calls are made one by one:
    ``batch = true`` in its section, or ``[daydream] batch = true`` (``--batch``) unless the
    section says ``batch = false``."""
    section = f"llm.{name}"
    on = _get(section, "batch", _boolean, None)
    if on is None:
        on = _get("daydream", "batch", _boolean, False)
    if not on:
        return None
    d = BatchSettings()
    s = BatchSettings(
        max_requests=_get(section, "batch_max_requests", int, d.max_requests),
        max_bytes=_get(section, "batch_max_bytes", int, d.max_bytes),
        poll_s=_get(section, "batch_poll", float, d.poll_s),
        window=_get(section, "batch_window", str, d.window),
        retry=_get(section, "batch_retry", str, d.retry),
        max_jobs=_get(section, "batch_max_jobs", int, d.max_jobs),
    )
    if s.max_requests < 1 or s.max_bytes < 1 or s.poll_s <= 0 or s.max_jobs < 1 or s.retry not in ("batch", "sync"):
        raise DaydreamError("config", f"[{section}] batch_max_requests, batch_max_bytes, batch_poll and "
                                      f"batch_max_jobs must be positive, batch_retry batch or sync", path=_where())
    return s


def resource_name(provider: str) -> str:
    """The Luigi resource that bounds concurrent calls to one provider."""
    return f"llm_{provider}"


def sync_resources(providers) -> None:
    """Make ``[resources] llm_<provider>`` equal each provider's concurrency.

    The scheduler reads ``[resources]``; ``[llm.<p>] concurrency`` is the one place a user sets the
    limit. An explicit ``[resources]`` entry that disagrees is a config error (two sources of truth).
    """
    cfg = _cfg()
    for p in providers:
        s = provider_settings(p)
        key = resource_name(p)
        existing = _get("resources", key, int, None)
        if existing is not None and existing != s.concurrency:
            raise DaydreamError(
                "config", f"[resources] {key} = {existing} disagrees with [llm.{p}] concurrency = {s.concurrency}",
                path=_where(),
            )
        if existing is None:
            if not cfg.has_section("resources"):
                cfg.add_section("resources")
            cfg.set("resources", key, str(s.concurrency))


def default_resources() -> None:
    """``sync_resources`` for every provider the config names, where it can: before a scheduler
    in this process reads ``[resources]``. The local scheduler reads them once, as it is made;
    the ``luigi`` command makes it after the task it runs, and before any of its ``run``. A
    provider whose settings are invalid or disagree is left as it is: ``run_plan.prepare_providers``
    reports it if the cohort uses it."""
    named = {s[len("llm."):] for s in _cfg().sections() if s.startswith("llm.")} | set(_PROVIDER_DEFAULTS)
    for name in sorted(named):
        try:
            sync_resources([name])
        except DaydreamError:
            pass


def _count(key: str, default: int) -> int:
    n = _get("daydream", key, int, default)
    if n < 1:
        raise DaydreamError("config", f"[daydream] {key} must be ≥ 1, got {n}", path=_where())
    return n


COPY_BATCH = 64  # copy-mode essays call no model: a batch of them is bounded only to keep tasks short


def batch_size() -> int | None:
    """``[daydream] batch_size``: how many ready generations of one stage a worker takes at once,
    with at most that many calls in flight. Unset, a batch runs as many calls at once as its
    provider's concurrency (one worker alone keeps the provider busy) over a few times as many
    generations; set it lower to share a provider between several workers in smaller batches."""
    return _count("batch_size", 0) if _get("daydream", "batch_size", str, None) is not None else None


def chunk_size() -> int:
    """How many generations are handed to the scheduler at once (keeps scheduling linear).

    Without calls ahead the next chunk opens only once this one's calls have drained, so a chunk
    must span many rounds of calls for that pause to be rare, yet stay small enough that the
    scheduler's scan of pending tasks per request stays cheap. Under calls ahead the next
    chunk's calls start before this one's have drained (``executor.start_ahead``), so only runs
    without them (luigid, ``--workers`` > 1) pause."""
    return _count("chunk_size", 2000)


def lookahead() -> bool:
    """``[daydream] lookahead``: an opened chunk starts its members' calls ahead of their tasks
    (``executor.start_ahead``), so calls stay in flight while Luigi schedules."""
    return _get("daydream", "lookahead", _boolean, True)


def confirm_above() -> int:
    """``[daydream] confirm_above``: a cohort of more generations than this needs ``--yes`` to
    compile or run (a typo'd axis can multiply a cohort into millions of files and calls)."""
    return _count("confirm_above", 100_000)


def confirm_cost_above() -> float:
    """``[daydream] confirm_cost_above``: a run whose remaining calls are estimated to cost more
    than this many USD starts only with ``--yes`` (or under a spend cap, which bounds it anyway)."""
    value = _get("daydream", "confirm_cost_above", float, 10.0)
    if not value >= 0:
        raise DaydreamError("config", f"[daydream] confirm_cost_above must be ≥ 0, got {value}", path=_where())
    return value


def claim_timeout() -> float:
    """``[daydream] claim_timeout``: seconds without a heartbeat after which a generation's claim
    is stale and another run takes it over (``claims``; heartbeats come every 5 s)."""
    value = _get("daydream", "claim_timeout", float, 30.0)
    if not value >= 10:
        raise DaydreamError("config", f"[daydream] claim_timeout must be ≥ 10 (seconds; heartbeats come every 5), "
                                      f"got {value}", path=_where())
    return value


def scheduler_disconnect_delay() -> float:
    """``[scheduler] worker_disconnect_delay`` as this project configures luigid (Luigi's default
    60 s): how long luigid keeps a silent worker's tasks."""
    return _get("scheduler", "worker_disconnect_delay", float, 60.0)


def calls_per_task(provider: str) -> int:
    """Resource units one (batched) generation task holds: the calls it may have in flight.
    Never more than the scheduler grants in total, or the task could never run."""
    limit = _get("resources", resource_name(provider), int, None)
    concurrency = provider_settings(provider).concurrency
    n = min(batch_size() or concurrency, concurrency)
    return max(1, min(n, limit) if limit is not None else n)


def score_thresholds() -> tuple[float, float]:
    """High/low score thresholds as fractions of each rubric's scale."""
    high = _get("reports", "high_threshold", float, 0.8)
    low = _get("reports", "low_threshold", float, 0.3)
    if not 0 <= low < high <= 1:
        raise DaydreamError("config", "[reports] need 0 ≤ low_threshold < high_threshold ≤ 1", path=_where())
    return high, low


def validate(providers) -> None:
    """Read every setting a run uses, so an invalid value is one error before any work starts."""
    for stage in _STAGE_DEFAULTS:
        stage_settings(stage)
    for p in providers:
        provider_settings(p)
    default_provider()
    batch_size()
    chunk_size()
    confirm_cost_above()
    score_thresholds()
