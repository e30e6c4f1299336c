"""Model providers behind one interface: ``make_provider(settings).complete(request)``.

Keys come only from the environment and are checked up front (``require_keys``) so a missing key is
one clear error before any work starts; messages name the variable, never a value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from pipeline.errors import DaydreamError
from pipeline.llm.base import Completion, CompletionRequest, Provider, ProviderSettings
from pipeline.llm.offline import OfflineProvider
from pipeline.llm.openai_provider import OpenAIProvider

__all__ = [
    "Completion",
    "CompletionRequest",
    "OfflineProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderSettings",
    "make_provider",
    "require_keys",
]

OFFLINE = "offline"


def _missing(settings: ProviderSettings, environ: Mapping[str, str]) -> str | None:
    """The env var this provider needs but lacks, if any."""
    if settings.name == OFFLINE or not settings.api_key_env:
        return None
    return None if (environ.get(settings.api_key_env) or "").strip() else settings.api_key_env


def make_provider(settings: ProviderSettings, environ: Mapping[str, str] = os.environ) -> Provider:
    """``offline`` -> the simulator; anything else -> an OpenAI-compatible HTTP provider."""
    if settings.name == OFFLINE:
        return OfflineProvider(settings)
    if env := _missing(settings, environ):
        raise DaydreamError("missing_key", f"provider '{settings.name}' needs {env}; set it in the environment")
    key = environ.get(settings.api_key_env).strip() if settings.api_key_env else None
    return OpenAIProvider(settings, key)


def require_keys(settings_list: Iterable[ProviderSettings], environ: Mapping[str, str] = os.environ) -> None:
    """One error listing every missing key, so the user fixes them all at once."""
    missing: dict[str, str] = {}
    for settings in settings_list:
        if env := _missing(settings, environ):
            missing.setdefault(f"provider '{settings.name}' needs {env}", env)
    if missing:
        noun = "it" if len(missing) == 1 else "them"
        raise DaydreamError("missing_key", f"{'; '.join(missing)}; set {noun} in the environment")
