"""Prompt rendering (contract §5, "Rendering"). Pure: template text and context in, prompt out.

Undefined variables are errors (StrictUndefined), reported with the template and variable name,
so a typo in a template never silently produces a prompt with a hole in it.
"""

from __future__ import annotations

import functools

import jinja2

from pipeline.errors import DaydreamError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@functools.lru_cache(maxsize=512)
def _compiled(text: str) -> jinja2.Template:
    """Compiling is the expensive part of rendering, and completeness checks render every
    generation's prompt: compile each distinct template text once."""
    return _ENV.from_string(text)


def render(text: str, context: dict, *, stage: str, template_id: str) -> str:
    try:
        return _compiled(text).render(**context)
    except jinja2.UndefinedError as exc:
        raise DaydreamError(
            "template",
            f"{stage} template {template_id!r} uses an undefined variable ({exc.message}); "
            f"available: {', '.join(sorted(context)) or 'none'}",
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise DaydreamError(
            "template", f"{stage} template {template_id!r}: syntax error at line {exc.lineno}: {exc.message}"
        ) from None
    except jinja2.TemplateError as exc:
        raise DaydreamError("template", f"{stage} template {template_id!r}: {exc}") from None


def draft_context(concepts: list[tuple[str, str]]) -> dict:
    """Drafts see ``concepts``: a list of ``{name, content}`` in the combo's order."""
    return {"concepts": [{"name": n, "content": c} for n, c in concepts]}


def essay_context(draft_text: str) -> dict:
    """Essays see the parent draft as ``draft_block``; ``links_block`` is the same text under the
    name the earlier system's essay templates use, so its catalogs render unchanged."""
    return {"draft_block": draft_text, "links_block": draft_text}


def evaluation_context(essay_text: str) -> dict:
    return {"response": essay_text}
