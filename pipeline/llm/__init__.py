"""Model providers behind one interface: ``make_provider(settings).generate(request)``.

``make_provider`` looks the section's model API up by name (``registry``, which imports an
adapter's module only then) and wraps it in the one
retrying ``Provider``. Keys come only from the environment and are checked up front
(``require_keys``) so a missing key is one clear error before any work starts; messages name the
variable, never a value.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from typing import Awaitable, Callable

from pipeline.errors import DaydreamError
from pipeline.llm.base import Completion, CompletionRequest, GenerationContext, ModelAPI, ProviderSettings, Transient
from pipeline.llm.registry import api_factory, api_names
from pipeline.llm.retrying import Provider

__all__ = [
    "Completion",
    "CompletionRequest",
    "GenerationContext",
    "ModelAPI",
    "Provider",
    "ProviderSettings",
    "Transient",
    "make_provider",
    "require_keys",
]


def _missing(settings: ProviderSettings, environ: Mapping[str, str]) -> str | None:
    """The env var this provider needs but lacks, if any."""
    if not settings.api_key_env:
        return None
    return None if (environ.get(settings.api_key_env) or "").strip() else settings.api_key_env


def make_provider(settings: ProviderSettings, environ: Mapping[str, str] = os.environ, *,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Provider:
    """The registered model API ``settings.api``, with its key, behind the retrying provider."""
    factory = api_factory(settings.api)
    if factory is None:
        raise DaydreamError("config", f"[llm.{settings.name}] api = {settings.api!r} is not one of "
                                      f"{', '.join(api_names())}")
    if env := _missing(settings, environ):
        raise DaydreamError("missing_key", f"provider '{settings.name}' needs {env}; set it in the environment")
    key = environ.get(settings.api_key_env).strip() if settings.api_key_env else None
    return Provider(factory(settings, key), settings, sleep=sleep)


def require_keys(settings_list: Iterable[ProviderSettings], environ: Mapping[str, str] = os.environ) -> None:
    """One error listing every missing key, so the user fixes them all at once."""
    missing: dict[str, str] = {}
    for settings in settings_list:
        if env := _missing(settings, environ):
            missing.setdefault(f"provider '{settings.name}' needs {env}", env)
    if missing:
        noun = "it" if len(missing) == 1 else "them"
        raise DaydreamError("missing_key", f"{'; '.join(missing)}; set {noun} in the environment")
