"""Structured output for evaluations: the JSON schema an answer follows, and the same schema
stated in the prompt. Pure.

A template with ``output_format = json`` asks for ``{"reasoning": ..., "score": ...}``. The
schema is always stated at the end of the prompt, so every model can follow it and the prompt
(and so the generation's fingerprint) does not depend on which provider serves the model; a
provider whose ``[llm.<name>] structured_output = json_schema`` also receives it as
``response_format``, which makes the provider itself hold the model to it. The score parser
reads a JSON answer first (``parsers.parse_score``).
"""

from __future__ import annotations

import json

OUTPUT_FORMATS = ("text", "json")  # a template's output_format ("" in the catalog means text)
STRUCTURED_OUTPUT = ("prompt", "json_schema")  # how a provider is asked: in the prompt only, or also response_format
SCHEMA_NAME = "evaluation"  # response_format's json_schema.name
INSTRUCTION = "Answer with only a JSON object that follows this JSON schema, with nothing before or after it:"


def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def score_schema(scale_min: float, scale_max: float) -> dict:
    """The JSON schema of an evaluation's answer on the rubric's scale (strict-mode compatible:
    every property required, no others)."""
    lo, hi = _number(scale_min), _number(scale_max)
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "description": "the assessment, criterion by criterion"},
            "score": {"type": "number", "minimum": lo, "maximum": hi,
                      "description": f"the final score on the rubric's {lo}-{hi} scale"},
        },
        "required": ["reasoning", "score"],
        "additionalProperties": False,
    }


def stated(schema: dict) -> str:
    """The schema as the prompt states it."""
    return f"{INSTRUCTION}\n{json.dumps(schema, indent=2)}\n"


def with_schema(prompt: str, schema: dict) -> str:
    """``prompt`` followed by the stated schema."""
    return prompt.rstrip("\n") + "\n\n" + stated(schema)
