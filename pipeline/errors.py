"""The one error type for every user-facing failure.

A user mistake (bad spec, unknown template, missing key) must reach the user as one line naming
the file and the value, with a non-zero exit and no traceback. Everything that can fail for a
reason the user can act on raises ``DaydreamError`` with a stable ``code``; the CLI prints
``error[<code>]: <message>`` and exits with status 2.
"""

from __future__ import annotations


class DaydreamError(Exception):
    """A failure the user can act on. ``code`` is stable and machine-readable."""

    # Codes in use (keep this list short and documented; tests match on codes, not wording).
    CODES = {
        "spec": "a cohort spec is malformed or inconsistent",
        "catalog": "a catalog in data/1_raw is malformed or lacks a referenced entry",
        "unsafe_id": "an id is not a safe file-name component",
        "config": "luigi.cfg or the environment holds an invalid setting",
        "cohort": "a cohort cannot be compiled or is unknown",
        "id_collision": "a computed gen_id already exists with a different signature",
        "store": "the gens store is missing, corrupt or not writable",
        "template": "a template cannot be rendered",
        "parse": "a model response could not be parsed",
        "invalid_output": "a model response failed validation (truncated, empty, too short)",
        "llm": "the model provider failed after retries, or refused the request",
        "missing_key": "the API key for a provider is not set",
        "scheduler": "the central scheduler (luigid) cannot be reached",
        "failed": "some generations failed; their reasons are recorded in the gens store",
        "budget": "a spend cap cannot be enforced, or a run's estimated cost needs --yes",
        "report": "reports cannot be built",
        "site": "the report site cannot be built",
        "ratings": "a human ratings file is malformed or names an unknown essay, rubric or rater",
    }

    def __init__(self, code: str, message: str, *, path: object | None = None):
        if code not in self.CODES:
            raise ValueError(f"unknown DaydreamError code {code!r}")
        self.code = code
        self.path = str(path) if path is not None else None
        self.message = f"{self.path}: {message}" if self.path else message
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        # as it is, across processes (a generation's error reaches the task from the executor's process)
        return _restore, (type(self), self.__dict__.copy())


def from_os_error(exc: BaseException) -> DaydreamError | None:
    """The error a user sees for ``exc``: a DaydreamError as it is; an OSError that names a file
    (a full disk, a permission refused, a read-only filesystem, a path through a file) as a
    ``store`` error naming that path; None for anything else (a bug: its traceback is wanted).
    The commands call this where they turn errors into messages, so no caller needs to."""
    if isinstance(exc, DaydreamError):
        return exc
    if not isinstance(exc, OSError) or exc.filename is None:
        return None
    path = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return DaydreamError("store", exc.strerror or type(exc).__name__, path=path)


def _restore(cls: type, state: dict) -> DaydreamError:
    error = cls.__new__(cls)
    Exception.__init__(error, state["message"])
    error.__dict__.update(state)
    return error


class ParseError(DaydreamError):
    """A parser could not extract its value; ``message`` is the recorded reason."""

    def __init__(self, message: str):
        super().__init__("parse", message)
