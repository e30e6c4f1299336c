"""The one definition of a generation's state (contract §6). Pure: no I/O, no Luigi.

Every generation is in exactly one state:

- ``done``: its output was produced from exactly the inputs it would be rendered from now;
- ``stale``: it has an outcome, but its inputs changed since (``reason`` says which) or its
  parent is about to be regenerated;
- ``failed``: its last attempt, on its current inputs, recorded a failure (``reason`` says why);
- ``pending``: never run, or its output is missing or corrupt;
- ``blocked``: an ancestor failed, so it cannot run (``reason`` names the ancestor).

The runner, ``status``, ``check``, the reports and the site all ask ``classify``. A child is
classified after its parent and is never judged against a parent that is not ``done``: while
the parent will be regenerated, the child is ``stale`` (or ``pending``), so one run settles a
template edit or a regenerated parent.

``at`` is when the failure behind a ``failed`` or ``blocked`` state was recorded (ISO 8601, UTC):
a run counts a failure as *settled* only if it was recorded during that run, so every new run
retries what failed before.
"""

from __future__ import annotations

from dataclasses import dataclass

DONE, STALE, FAILED, PENDING, BLOCKED = "done", "stale", "failed", "pending", "blocked"
KINDS = (DONE, STALE, FAILED, PENDING, BLOCKED)


@dataclass(frozen=True)
class State:
    kind: str
    reason: str | None = None
    at: str | None = None  # failed / blocked: when the (ancestor's) failure was recorded

    def settled(self, since: str | None) -> bool:
        """Nothing more for a run that started at ``since`` to do: done, or a failure recorded in
        that run (directly or by an ancestor). Without ``since`` only ``done`` is settled."""
        if self.kind == DONE:
            return True
        return bool(since) and self.kind in (FAILED, BLOCKED) and (self.at or "") >= since


@dataclass(frozen=True)
class Outcome:
    """What the store records of a generation's last attempt (from ``parsed_metadata.json``)."""

    success: bool
    input_fingerprint: str | None
    output_intact: bool  # parsed.txt present and matching its recorded hash (success only)
    error: str | None = None
    finished_at: str | None = None
    template_sha256: str | None = None
    parent_sha256: str | None = None


@dataclass(frozen=True)
class CurrentInputs:
    """The fingerprint of the inputs a generation would be rendered from now."""

    fingerprint: str
    template_sha256: str | None = None
    parent_sha256: str | None = None


def classify(outcome: Outcome | None, parent: State | None, current: CurrentInputs | None,
             *, parent_id: str | None = None, template_id: str | None = None) -> State:
    """A generation's state from its recorded outcome, its parent's state and its current inputs.

    ``current`` is only needed (and only computable) when the parent is done or there is none.
    """
    if parent is not None and parent.kind != DONE:
        if parent.kind in (FAILED, BLOCKED):
            root = parent.reason if parent.kind == BLOCKED else f"parent {parent_id} failed"
            return State(BLOCKED, root, parent.at)
        if outcome is None:
            return State(PENDING, f"waits for parent {parent_id}")
        return State(STALE, f"parent {parent_id} is {parent.kind} and will be regenerated first")
    if outcome is None:
        return State(PENDING)
    if current is None:
        raise ValueError("classify needs the current inputs when the parent is done")
    if outcome.input_fingerprint != current.fingerprint:
        return State(STALE, _why_stale(outcome, current, parent_id, template_id))
    if not outcome.success:
        return State(FAILED, outcome.error or "failed", outcome.finished_at)
    if not outcome.output_intact:
        return State(PENDING, "parsed.txt is missing or does not match its recorded hash")
    return State(DONE)


def _why_stale(outcome: Outcome, current: CurrentInputs, parent_id: str | None, template_id: str | None) -> str:
    why = []
    if outcome.template_sha256 and outcome.template_sha256 != current.template_sha256:
        why.append(f"template {template_id!r} was edited")
    if outcome.parent_sha256 and outcome.parent_sha256 != current.parent_sha256:
        why.append(f"parent {parent_id} was regenerated")
    return "; ".join(why) or "its inputs changed (concepts, model, parser or scale)"
