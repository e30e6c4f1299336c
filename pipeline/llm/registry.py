"""Model APIs by name: an adapter registers itself with ``@register_api("name")``; a provider
section picks one with ``api = name`` (``[llm.offline]`` defaults to the simulator, every other
section to ``openai``, i.e. any OpenAI-compatible server).

The built-in adapters are listed here by name → module and imported on first use
(``api_factory``): the ``openai`` SDK alone takes a third of a second to import, which every
command that never calls a model (``status``, ``--help``, …) would otherwise pay.
"""

from __future__ import annotations

import importlib
from typing import Callable

from pipeline.llm.base import ModelAPI, ProviderSettings

# Where each built-in adapter registers itself, imported when its name is first looked up.
_API_MODULES = {"openai": "pipeline.llm.openai_provider", "offline": "pipeline.llm.offline"}
_BATCH_API_MODULES = {"openai": "pipeline.llm.batch", "offline": "pipeline.llm.batch"}

# Adapter factories only (classes, fixed at import): never results or state.
_APIS: dict[str, Callable[[ProviderSettings, str | None], ModelAPI]] = {}


def _load(name: str, registered: dict, modules: dict[str, str]) -> Callable | None:
    if name not in registered and name in modules:
        importlib.import_module(modules[name])  # its decorator fills ``registered``
    return registered.get(name)


def import_builtin() -> None:
    """Import every built-in adapter now, once: what a process that forks the processes running
    generations (Luigi's ``--workers`` > 1, the executor's) does before forking, so each of them
    inherits the SDK instead of importing it again (a third of a second of CPU each)."""
    for module in sorted({*_API_MODULES.values(), *_BATCH_API_MODULES.values()}):
        importlib.import_module(module)


def register_api(name: str):
    def decorate(factory):
        _APIS[name] = factory
        return factory
    return decorate


def api_factory(name: str) -> Callable[[ProviderSettings, str | None], ModelAPI] | None:
    return _load(name, _APIS, _API_MODULES)


def api_names() -> list[str]:
    return sorted(set(_APIS) | set(_API_MODULES))


# Batch-job adapters (``pipeline/llm/batch.py``), by the same names: a section with ``batch = true``
# needs one for its ``api``.
_BATCH_APIS: dict[str, Callable] = {}


def register_batch_api(name: str):
    def decorate(factory):
        _BATCH_APIS[name] = factory
        return factory
    return decorate


def batch_api_factory(name: str) -> Callable | None:
    return _load(name, _BATCH_APIS, _BATCH_API_MODULES)
