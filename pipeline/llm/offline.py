"""The offline simulator: deterministic, plausible, parseable responses without any network.

It lets the demo cohort and the test suite run anywhere. The same request always yields the same
text (seeded from the prompt, model, template and stage). Drafts take the shape their parser
expects; essays are built from the prompt so they differ by draft and model; evaluations end in a
score on the template's scale whose structure makes reports meaningful: a per-model bias (some
simulated judges are harsher), a per-template bias, an essay-quality component shared by every
evaluator of the same essay (so inter-rater statistics mean something) and a little noise.

Simulation is marked only in metadata (``Completion.simulated``), never in the text, so parsers
and validators see exactly what a real model could have written.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time

from pipeline.llm.base import Completion, CompletionRequest, ProviderSettings

_STOPWORDS = set(
    """about above after again against among another because before being below between both
    could does doing during each either every first following from further given having here
    itself might never other ought please rather response should since still their theirs them
    themselves there these they thing things those though through under until using which while
    within without would write essay draft below concept concepts words paragraph paragraphs
    score scale rubric evaluate evaluation provide include instructions format answer output
    template return respond final""".split()
)

_OPENERS = [
    "What if {a} were treated as a process rather than a thing, one that quietly reshapes {b}?",
    "Start from {a}. Most accounts stop there, but the interesting move is to ask what {b} owes to it.",
    "The tension between {a} and {b} is usually framed as a trade-off; it may instead be a feedback loop.",
    "Consider {a} as an instrument for seeing {b} more clearly, the way a lens changes what counts as detail.",
    "An unlikely pairing: {a} and {b}. Put side by side, each explains a blind spot of the other.",
]
_MOVES = [
    "A concrete version: a small team that tracks {a} every week and uses it to decide where {b} should go next.",
    "The mechanism is simple enough to test: when {a} increases, {b} should become easier to notice and cheaper to act on.",
    "This suggests a design principle: build systems where {a} is visible, and let {b} emerge from the traces it leaves.",
    "The strongest objection is that {a} is too noisy to steer anything; the reply is that {b} averages the noise away.",
    "Historically, {a} arrived first and {b} followed, but the causal arrow might just as well point the other way.",
    "If this holds, the payoff is practical: fewer wasted experiments, and a vocabulary for explaining why {b} works.",
    "One way to falsify it: find a setting rich in {a} where {b} never develops, and ask what was missing.",
    "It also reframes failure: a stalled project may be short not of effort but of {a}, the raw material of {b}.",
]
_CLOSERS = [
    "The idea is small, but it turns {a} from background into a lever.",
    "Taken seriously, this makes {b} something one can cultivate rather than wait for.",
    "What remains open is scale: whether the link between {a} and {b} survives when many people rely on it.",
    "The next step is an experiment, not another argument.",
]
_INTROS = [
    "Before writing, I want to find the point where these ideas touch. {a} and {b} look unrelated at first, "
    "but both are about how structure appears over time.",
    "Let me think about what connects {a} with {b}. The obvious link is weak; the interesting one is about "
    "feedback, so I will build the essay around that.",
    "There is a productive collision here between {a} and {b}. I will sketch it briefly, then write it out properly.",
]
_REASONS = [
    "The essay's central claim, roughly \"{q}\", is stated clearly and pursued with some consistency.",
    "It connects {a} and {b} in a way that is not entirely obvious, though the link is asserted more than shown.",
    "The argument around \"{q}\" would benefit from a concrete example or a test that could prove it wrong.",
    "Structure is reasonable: an opening claim, a mechanism, an objection and a closing implication.",
    "Some passages repeat the premise instead of developing it, which weakens the middle section.",
    "The treatment of {a} is the strongest part; {b} is handled more superficially.",
]
_CRITERIA = [("Originality", 3), ("Coherence", 3), ("Depth", 2), ("Clarity", 2)]


def _hash(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [-1, 1) for ``parts``."""
    return int.from_bytes(_hash(*parts)[:8], "big") / 2**63 - 1


def _tokens(text: str) -> int:
    return round(len(text.split()) * 1.3)


class OfflineProvider:
    """Provider ``offline``: no network, no key, same request -> same text."""

    def __init__(self, settings: ProviderSettings | None = None):
        self.name = settings.name if settings else "offline"

    def __repr__(self) -> str:
        return f"OfflineProvider(name={self.name!r})"

    def complete(self, request: CompletionRequest) -> Completion:
        started = time.monotonic()
        rng = random.Random(_hash(request.prompt, request.model_slug, request.template_id, request.stage))
        if request.stage == "evaluation" or request.parser == "score":
            text = _evaluation(request, rng)
        else:
            text = _wrap(_body(request, rng), request.parser, request, rng)
        return Completion(
            text=text,
            finish_reason="stop",
            truncated=False,
            prompt_tokens=_tokens(request.prompt),
            completion_tokens=_tokens(text),
            cost_usd=None,
            duration_s=time.monotonic() - started,
            attempts=1,
            simulated=True,
            provider=self.name,
            model_slug=request.model_slug,
        )


# -- reading the prompt ----------------------------------------------------------------------------


def _keywords(prompt: str, rng: random.Random, n: int) -> list[str]:
    """Distinctive words of the prompt (frequent first), so the text is about what was asked."""
    counts: dict[str, int] = {}
    for word in re.findall(r"[A-Za-z][A-Za-z-]{4,}", prompt):
        word = word.lower().strip("-")
        if word not in _STOPWORDS and len(word) >= 5:
            counts[word] = counts.get(word, 0) + 1
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[: max(n * 3, 8)]
    if len(ranked) < n:
        ranked += ["attention", "structure", "feedback", "curiosity", "memory", "play"][: n - len(ranked)]
    return rng.sample(ranked, n)


def _sentences(prompt: str) -> list[str]:
    """Prose sentences of the prompt (markup and short fragments skipped), for quoting."""
    text = re.sub(r"<[^>]+>|[#*_`>{}\[\]]", " ", prompt)
    found = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+|\n", text)]
    return [s for s in found if 30 <= len(s) <= 220] or ["the ideas hold together better than expected"]


def _fill(pattern: str, words: list[str], rng: random.Random) -> str:
    a, b = rng.sample(words, 2)
    return pattern.format(a=a, b=b)


# -- drafts and essays --------------------------------------------------------------------------------


def _body(request: CompletionRequest, rng: random.Random) -> list[str]:
    """Non-empty lines of prose about the prompt; essays are longer and quote their source."""
    words = _keywords(request.prompt, rng, 5)
    verbosity = 1 + int((_unit("verbosity", request.model_slug) + 1) * 1.5)  # 1..3 extra lines per model
    lines = [f"{words[0].capitalize()} and {words[1]}: a working idea"]
    lines.append(_fill(rng.choice(_OPENERS), words, rng))
    if request.stage == "essay":
        quotes = rng.sample(_sentences(request.prompt), k=min(3, len(_sentences(request.prompt))))
        for quote in quotes:
            lines.append(f"The draft puts it this way: \"{quote.rstrip('.')}.\" That deserves a closer look.")
        count = 5 + verbosity
    else:
        count = 3 + verbosity
    lines += [_fill(move, words, rng) for move in rng.sample(_MOVES, k=min(count, len(_MOVES)))]
    lines.append(_fill(rng.choice(_CLOSERS), words, rng))
    return lines


def _wrap(lines: list[str], parser: str, request: CompletionRequest, rng: random.Random) -> str:
    """Give the prose the structure the template's parser expects."""
    words = _keywords(request.prompt, rng, 2)
    if parser in ("essay_block", "essay_block_lenient"):
        intro = _fill(rng.choice(_INTROS), words, rng)
        if parser == "essay_block_lenient" and rng.random() < 0.5:
            intro = f"<thinking>\n{intro}\n</thinking>"
        return intro + "\n\n<essay>\n" + "\n\n".join(lines) + "\n</essay>\n"
    if parser == "essay_idea_last":
        stages = rng.randint(2, 4)
        blocks = []
        for stage in range(1, stages + 1):
            part = lines[: max(3, len(lines) * stage // stages)]
            blocks.append(f'<essay-idea stage="{stage}">\n' + "\n".join(part) + "\n</essay-idea>")
        return "\n\n".join(blocks) + "\n"
    return "\n\n".join(lines) + "\n"


# -- evaluations --------------------------------------------------------------------------------------


def _quality(prompt: str) -> float:
    """Essay quality in about [-1.7, 1.7], shared by every evaluator that sees the same essay.

    Each prompt line votes with its length, so the (long) essay lines dominate and the
    template's instruction lines shift the result only a little.
    """
    lines = [line.strip() for line in prompt.splitlines() if line.strip()]
    weights = [len(line) for line in lines] or [1]
    votes = [_unit("quality", line) for line in lines] or [0.0]
    z = sum(w * v for w, v in zip(weights, votes)) / math.sqrt(sum(w * w for w in weights))
    return z * math.sqrt(3)  # unit variance


def simulated_score(request: CompletionRequest, rng: random.Random) -> float:
    """A score on the request's scale: model bias + template bias + essay quality + noise."""
    lo, hi = float(request.scale_min), float(request.scale_max)
    p = (
        0.58
        + 0.12 * _unit("model-bias", request.model_slug)
        + 0.06 * _unit("template-bias", request.template_id)
        + 0.10 * _quality(request.prompt)
        + rng.gauss(0, 0.04)
    )
    p = min(1.0, max(0.0, p))
    step = 0.5 if hi - lo == 10 else 1.0
    value = lo + round(p * (hi - lo) / step) * step
    return min(hi, max(lo, value))


def _fmt(value: float) -> str:
    return f"{value:g}"


def _score_line(request: CompletionRequest, score: float) -> str:
    """The final line, in a format that depends on the template, as real judges differ."""
    s, hi = _fmt(score), _fmt(float(request.scale_max))
    if request.scale_max == 9:
        formats = ["SCORE: {s}", "**SCORE:** {s}", "SCORE: {s}"]
    else:
        formats = [
            "Final Score: {s}/{hi}",
            "**Total Score:** {s}/{hi}",
            "SCORE: {s}",
            "Score: {s}",
            "**Final Score:**\n{s}/{hi}",
            "Total Score: {s}/{hi}",
        ]
    pick = int.from_bytes(_hash("format", request.template_id)[:4], "big") % len(formats)
    return formats[pick].format(s=s, hi=hi)


def _evaluation(request: CompletionRequest, rng: random.Random) -> str:
    score = simulated_score(request, rng)
    p = (score - request.scale_min) / ((request.scale_max - request.scale_min) or 1)
    words = _keywords(request.prompt, rng, 2)
    quote = rng.choice(_sentences(request.prompt))[:90].rstrip(" .,;")
    reasons = rng.sample(_REASONS, k=3)
    lines = ["Assessment:"]
    lines += [f"- {r.format(a=words[0], b=words[1], q=quote)}" for r in reasons]
    lines += ["", "Rubric breakdown:"]
    for name, top in _CRITERIA:
        sub = min(top, max(0, round(p * top + rng.uniform(-0.6, 0.6))))
        lines.append(f"- {name}: {sub}/{top}")
    lines += ["", _score_line(request, score)]
    return "\n".join(lines) + "\n"
