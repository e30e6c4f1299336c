"""Deterministic ids (contract §4). Pure: no I/O.

Ids are derived from what a generation *is* (its parent, template, model and replicate), so the
same design always maps to the same files and a shared generation is stored once. The essay id
includes the essay model in llm mode (defect §9.1 of the earlier system).
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
STAGE_PREFIX = {"draft": "d_", "essay": "e_", "evaluation": "v_"}


def is_safe_id(value: object) -> bool:
    """True when ``value`` can be used as one file-name component under the data root."""
    s = str(value)
    return bool(SAFE_ID.match(s)) and s not in (".", "..")


def combo_id(concept_ids: Iterable[str], level: str, k: int) -> str:
    """``combo_v1_`` + 12 hex digits of SHA-256 over the sorted concepts, level and k."""
    payload = "|".join(sorted(str(c) for c in concept_ids)) + "|" + str(level) + "|" + str(k)
    return "combo_v1_" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def _base36(n: int) -> str:
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out))


def _gen_id(stage: str, components: Iterable[object]) -> str:
    signature = "|".join(str(c).strip().lower() for c in components)
    digest = hashlib.blake2b(signature.encode("utf-8"), digest_size=10).digest()
    return STAGE_PREFIX[stage] + _base36(int.from_bytes(digest, "big"))


def draft_gen_id(combo_id: str, template_id: str, model_id: str, replicate: int) -> str:
    return _gen_id("draft", (combo_id, template_id, model_id, replicate))


def essay_gen_id(draft_gen_id: str, template_id: str, model_id: str | None, replicate: int) -> str:
    """``model_id`` is None for copy-mode essays, whose signature has no model component."""
    if model_id is None or str(model_id).strip() in ("", "None", "none"):
        return _gen_id("essay", (draft_gen_id, template_id, replicate))
    return _gen_id("essay", (draft_gen_id, template_id, model_id, replicate))


def evaluation_gen_id(essay_gen_id: str, template_id: str, model_id: str, replicate: int) -> str:
    return _gen_id("evaluation", (essay_gen_id, template_id, model_id, replicate))


def signature(stage: str, *, parent: str, template_id: str, model_id: str | None, replicate: int) -> list[str]:
    """The signature components of a generation, as recorded in metadata for collision checks."""
    parts = [parent, template_id] + ([] if model_id is None else [model_id]) + [replicate]
    return [str(p).strip().lower() for p in parts]
