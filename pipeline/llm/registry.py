"""Model APIs by name: an adapter registers itself with ``@register_api("name")``; a provider
section picks one with ``api = name`` (``[llm.offline]`` defaults to the simulator, every other
section to ``openai``, i.e. any OpenAI-compatible server)."""

from __future__ import annotations

from typing import Callable

from pipeline.llm.base import ModelAPI, ProviderSettings

# Adapter factories only (classes, fixed at import): never results or state.
_APIS: dict[str, Callable[[ProviderSettings, str | None], ModelAPI]] = {}


def register_api(name: str):
    def decorate(factory):
        _APIS[name] = factory
        return factory
    return decorate


def api_factory(name: str) -> Callable[[ProviderSettings, str | None], ModelAPI] | None:
    return _APIS.get(name)


def api_names() -> list[str]:
    return sorted(_APIS)
