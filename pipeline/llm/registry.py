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


# Batch-job adapters (``pipeline/llm/batch.py``), by the same names: a section with ``batch = true``
# needs one for its ``api``.
_BATCH_APIS: dict[str, Callable] = {}


def register_batch_api(name: str):
    def decorate(factory):
        _BATCH_APIS[name] = factory
        return factory
    return decorate


def batch_api_factory(name: str) -> Callable | None:
    return _BATCH_APIS.get(name)
