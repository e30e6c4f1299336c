"""The offline simulator: deterministic, plausible, parseable responses without any network.

It lets the demo cohort and the test suite run anywhere. The same request always yields the same
text (seeded from the prompt, model, template, stage and replicate number). Drafts take the shape their parser
expects; essays are built from the draft in the prompt, so they differ by draft and by model;
evaluations end in a score on the template's scale (in the format the template asks for, when it
says; a JSON object when the request carries a JSON schema) with structure that makes reports meaningful: a per-model bias (some simulated judges are
harsher), a per-template bias, an essay-quality component shared by every evaluator of the same
essay (so inter-rater statistics mean something) and a little noise.

Known effects can be planted, so the statistics of the reports can be checked against the truth
(see ``Effects``): an evaluation model's or rubric's bias is added to the score, and an essay
template's or essay model's effect is planted in the essay text itself, by picking among
candidate texts the one whose simulated quality is nearest the shifted target (evaluators only
ever see the text). Draft effects cannot be planted: a draft reaches its evaluators only through
an essay written by another template.

A rubric can plant a target to search for (``target_shift``): when the evaluation prompt has a
line ``Target concepts: a, b, c`` (concept ids), the score rises with the share of those concepts
in the combo being evaluated (``GenerationContext.concept_ids``), and falls a little with each
concept outside the target. The target thus lives in the rubric, where a researcher describes the
idea they are looking for, and needs no configuration; it is part of the prompt, so of every
evaluation's fingerprint.

Simulation is marked only in metadata (``Completion.simulated``), never in the text, so parsers
and validators see exactly what a real model could have written.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Mapping

from pipeline.llm.base import Completion, CompletionRequest, ProviderSettings
from pipeline.llm.registry import register_api

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
    "Seen from the side of {b}, {a} looks less like a resource and more like a constraint that shapes what is possible.",
]
_CLOSERS = [
    "The idea is small, but it turns {a} from background into a lever.",
    "Taken seriously, this makes {b} something one can cultivate rather than wait for.",
    "What remains open is scale: whether the link between {a} and {b} survives when many people rely on it.",
    "The next step is an experiment, not another argument.",
]
_INTROS = [
    "Before writing, I want to find the point where these ideas touch. {A} and {b} look unrelated at first, "
    "but both are about how structure appears over time.",
    "Let me think about what connects {a} with {b}. The obvious link is weak; the interesting one is about "
    "feedback, so I will build around that.",
    "There is a productive collision here between {a} and {b}. I will sketch it briefly, then write it out properly.",
]
_QUOTE_FRAMES = [
    'The draft puts it this way: "{q}" That deserves a closer look.',
    'Take the claim that "{q}" Read literally, it commits us to more than it first seems.',
    'Consider the line "{q}" It carries most of the argument, so it is worth testing.',
    'One sentence does the real work: "{q}" Everything else elaborates it.',
]
_REASONS = [
    'The essay\'s central claim, roughly "{q}", is stated clearly and pursued with some consistency.',
    "It connects {a} and {b} in a way that is not entirely obvious, though the link is asserted more than shown.",
    'The passage "{q}" would benefit from a concrete example or a test that could prove it wrong.',
    "Structure is reasonable: an opening claim, a mechanism, an objection and a closing implication.",
    "Some passages repeat the premise instead of developing it, which weakens the middle section.",
    "The treatment of {a} is the strongest part; {b} is handled more superficially.",
]
_CRITERIA = [("Originality", 3), ("Coherence", 3), ("Depth", 2), ("Clarity", 2)]
# Final-line formats for templates that do not say which one they want (real judges differ).
_SCORE_FORMATS = ["Final Score: {s}/{hi}", "**Total Score:** {s}/{hi}", "SCORE: {s}", "Score: {s}", "**Final Score:**\n{s}/{hi}"]

_STOPWORDS = set(
    """about above after again against among another because before being below between both could
    does doing during each either every first following from further given having here itself might
    never other ought please rather should since still their theirs them themselves there these they
    thing things those though through under until using which while within without would write
    written essay essays draft drafts concept concepts words paragraph paragraphs score scores rating
    ratings scale rubric evaluate evaluation provide include instructions format answer output
    template return respond response final short plain prose ideas connects connect combine idea
    stage version block blocks closing opening nothing begin directly""".split()
)
# The simulator's own phrases must not be mistaken for the topic when it reads its own drafts.
_STOPWORDS |= {
    w.lower() for s in _OPENERS + _MOVES + _CLOSERS + _INTROS + _QUOTE_FRAMES for w in re.findall(r"[A-Za-z]+", s)
}
_FALLBACK_TOPICS = ["attention", "structure", "feedback", "curiosity", "memory", "play"]


def _hash(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [-1, 1) for ``parts``."""
    return int.from_bytes(_hash(*parts)[:8], "big") / 2**63 - 1


def _tokens(text: str) -> int:
    return round(len(text.split()) * 1.3)


QUALITY_WEIGHT = 0.10  # normalised-score change per unit of essay quality (see simulated_score)
NOISE = 0.07  # default sd of the per-request noise on the normalised scale (replicates differ by it)
EFFECT_KINDS = ("essay_template", "essay_llm", "evaluation_template", "evaluation_llm")
_CANDIDATES = 48  # essay texts tried when planting an essay effect
TARGET_WEIGHT = 0.4  # normalised-score span from a combo without the planted target to one with all of it
TARGET_DILUTION = 0.03  # loss per concept of the combo outside the target
_TARGET_LINE = re.compile(r"^[ \t*#_-]*target concepts:[ \t*_]*(.+?)[ \t*_]*$", re.I | re.M)


@dataclass(frozen=True)
class Effects:
    """Effects planted on the normalised (0–1) score scale.

    ``shifts`` maps ``(kind, id)`` to a shift, kind ∈ EFFECT_KINDS; an ``*_llm`` id matches the
    model slug or its last path part (``sim-alpha`` matches ``offline/sim-alpha``). ``noise`` is
    the sd of the noise each request (so each replicate) adds. Set them in luigi.cfg::

        [offline]
        # essays from template essay-a score 0.10 higher; judge sim-beta is 0.05 more generous
        effects = essay_template:essay-a = 0.10, evaluation_llm:sim-beta = 0.05
        noise = 0.07
    """

    shifts: Mapping[tuple[str, str], float] = field(default_factory=dict)
    noise: float = NOISE

    @classmethod
    def parse(cls, text: str, noise: float = NOISE) -> "Effects":
        shifts = {}
        for item in re.split(r"[,\n]", text or ""):
            if not item.strip():
                continue
            m = re.fullmatch(r"\s*([a-z_]+):([^=\s]+)\s*=\s*([-+]?[0-9.]+(?:e[-+]?\d+)?)\s*", item, re.I)
            if not m or m.group(1) not in EFFECT_KINDS:
                raise ValueError(f"[offline] effects: {item.strip()!r} is not <kind>:<id> = <shift> with kind one "
                                 f"of {', '.join(EFFECT_KINDS)}")
            shifts[(m.group(1), m.group(2))] = float(m.group(3))
        if not (noise >= 0):
            raise ValueError(f"[offline] noise must be ≥ 0 (got {noise})")
        return cls(shifts, noise)

    @classmethod
    def from_config(cls) -> "Effects":
        import luigi.configuration

        from pipeline.errors import DaydreamError

        cfg = luigi.configuration.get_config()
        text = cfg.get("offline", "effects", "") if cfg.has_option("offline", "effects") else ""
        noise = cfg.get("offline", "noise", "") if cfg.has_option("offline", "noise") else ""
        try:
            return cls.parse(str(text or ""), float(noise) if str(noise or "").strip() else NOISE)
        except ValueError as exc:
            raise DaydreamError("config", str(exc)) from None

    def shift(self, stage: str, request: CompletionRequest) -> float:
        slug = request.model_slug or ""
        total = 0.0
        for (kind, key), value in self.shifts.items():
            if not kind.startswith(stage + "_"):
                continue
            if kind.endswith("_template") and key == request.context.template_id:
                total += value
            elif kind.endswith("_llm") and (key == slug or slug.endswith("/" + key)):
                total += value
        return total


@register_api("offline")
class OfflineAPI:
    """Model API ``offline``: no network, no key, same request -> same text."""

    def __init__(self, settings: ProviderSettings | None = None, api_key: str | None = None, *,
                 effects: Effects | None = None):
        self.name = settings.name if settings else "offline"
        self.effects = effects if effects is not None else Effects.from_config()

    def __repr__(self) -> str:
        return f"OfflineAPI(name={self.name!r})"

    async def aclose(self) -> None:
        pass  # nothing opened

    async def generate(self, request: CompletionRequest) -> Completion:
        started = time.monotonic()
        seed = [request.prompt, request.model_slug, request.context.template_id, request.context.stage]
        if request.context.replicate != 1:  # replicates vary like resampling would; replicate 1 keeps the base seed
            seed.append(request.context.replicate)
        rng = random.Random(_hash(*seed))
        if request.context.stage == "evaluation" or request.context.parser == "score":
            text = _evaluation(request, rng, self.effects)
        else:
            lines = _prose(request, rng)
            shift = self.effects.shift("essay", request) if request.context.stage == "essay" else 0.0
            if shift:
                lines = _planted(request, lines, shift, seed)
            text = _wrap(request, lines, rng)
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


# -- reading the prompt ------------------------------------------------------------------------------

_DELIMITED = [
    re.compile(r"<<<\n?(.*?)\n?>>>", re.S),
    re.compile(r'"""\n?(.*?)\n?"""', re.S),
    re.compile(r"```[^\n]*\n(.*?)\n?```", re.S),
    re.compile(r"<essay[^>]*>(.*?)</essay>", re.S | re.I),
]
_LIST_ITEM = re.compile(r"^[ \t]*(?:\d+[.)]|[-*]|#{1,6})[ \t]+\**([A-Za-z][^:\n*]{2,60}?)\**(?::[ \t]+\S.*)?[ \t]*$", re.M)
_TITLE = re.compile(r"^(.{3,60}?) and (.{3,60}?): a working idea$", re.M)  # first line of our own prose


def _focus(prompt: str) -> str:
    """The text a template wraps in delimiters (the draft or essay under review), else the prompt."""
    blocks = [m.group(1) for pattern in _DELIMITED for m in pattern.finditer(prompt)]
    blocks = [b for b in blocks if len(b.split()) >= 20]
    return max(blocks, key=len) if blocks else prompt


def _topics(prompt: str, focus: str) -> list[str]:
    """What the text is about: the simulator's own title, concept names listed in the prompt,
    else the focus text's most frequent phrases."""
    if title := _TITLE.search(focus):
        return [title.group(1).lower(), title.group(2).lower()]
    names: list[str] = []
    if focus is prompt:
        for m in _LIST_ITEM.finditer(prompt):
            name = m.group(1).strip()
            if len(name.split()) <= 5 and name[-1] not in ".,;!?" and name.lower() not in names:
                names.append(name.lower())
        if len(names) >= 2:
            return names
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", focus)]
    counts: dict[str, int] = {}
    for first, second in zip(words, words[1:]):
        if len(first) > 3 and len(second) > 3 and not {first, second} & _STOPWORDS:
            counts[f"{first} {second}"] = counts.get(f"{first} {second}", 0) + 1
    phrases = [p for p, n in counts.items() if n >= 2]
    if len(phrases) < 2:
        for word in words:
            if len(word) >= 5 and word not in _STOPWORDS:
                counts[word] = counts.get(word, 0) + 1
        phrases = [w for w in counts if " " not in w]
    ranked = sorted(phrases, key=lambda p: (-counts[p], p))
    return ranked[:8] if len(ranked) >= 2 else ranked + _FALLBACK_TOPICS


def _quotes(focus: str, topics: list[str]) -> list[str]:
    """Whole prose sentences of the focus text that mention a topic, for quoting (never ones that
    already quote something or mention scores, which would confuse the score parser)."""
    text = re.sub(r"<[^>]+>|[#*_`>\[\]{}]", " ", focus)
    sentences = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+|\n", text)]
    keep = [
        s for s in sentences
        if 40 <= len(s) <= 160 and s[-1] in ".!?" and '"' not in s and not re.search(r"score|rating", s, re.I)
    ]
    about = [s for s in keep if any(t in s.lower() for t in topics)]
    return about or keep or ["The ideas hold together better than expected."]


class _Words:
    """The topics of one response, handed out in a seeded order."""

    def __init__(self, topics: list[str], rng: random.Random):
        self.topics, self.rng = topics, rng

    def fill(self, pattern: str, **extra: str) -> str:
        a, b = self.rng.sample(self.topics, 2)
        return pattern.format(a=a, b=b, A=a[:1].upper() + a[1:], **extra)


# -- drafts and essays --------------------------------------------------------------------------------


def _prose(request: CompletionRequest, rng: random.Random) -> list[str]:
    """Lines of prose about the prompt's topics; essays are longer and quote their draft."""
    focus = _focus(request.prompt)
    words = _Words(_topics(request.prompt, focus), rng)
    extra = 1 + int((_unit("verbosity", request.model_slug) + 1) * 1.5)  # 1..3 more lines, per model
    a, b = rng.sample(words.topics, 2)
    lines = [f"{a[:1].upper() + a[1:]} and {b}: a working idea", words.fill(rng.choice(_OPENERS))]  # see _TITLE
    if request.context.stage == "essay":
        quotes = _quotes(focus, words.topics)
        for quote, frame in zip(rng.sample(quotes, min(3, len(quotes))), rng.sample(_QUOTE_FRAMES, 3)):
            lines.append(frame.format(q=quote))
        count = 5 + extra
    else:
        count = 3 + extra
    lines += [words.fill(move) for move in rng.sample(_MOVES, count)]
    lines.append(words.fill(rng.choice(_CLOSERS)))
    return lines


def _planted(request: CompletionRequest, lines: list[str], shift: float, seed: list) -> list[str]:
    """Among candidate essays, the one whose quality is nearest the unplanted essay's quality
    plus ``shift`` (in quality units): the planted effect then reaches every evaluator through
    the text, as a real one would."""
    target = _quality("\n".join(lines)) + shift / QUALITY_WEIGHT
    best, gap = lines, math.inf
    for i in range(_CANDIDATES):
        cand = _prose(request, random.Random(_hash(*seed, "planted", i)))
        g = abs(_quality("\n".join(cand)) - target)
        if g < gap:
            best, gap = cand, g
    return best


def _wrap(request: CompletionRequest, lines: list[str], rng: random.Random) -> str:
    """Give the prose the structure the template's parser expects."""
    parser = request.context.parser
    if parser in ("essay_block", "essay_block_lenient"):
        intro = _Words(_topics(request.prompt, _focus(request.prompt)), rng).fill(rng.choice(_INTROS))
        if parser == "essay_block_lenient" and rng.random() < 0.5:
            intro = f"<thinking>\n{intro}\n</thinking>"
        return intro + "\n\n<essay>\n" + "\n\n".join(lines) + "\n</essay>\n"
    if parser == "essay_idea_last":
        stages = rng.randint(2, 4)
        blocks = []
        for stage in range(1, stages + 1):
            part = lines[: max(3, len(lines) * stage // stages)]
            critique = "Critique: still too vague about the mechanism; the next version names it." if stage < stages else ""
            blocks.append(f'<essay-idea stage="{stage}">\n' + "\n".join(part) + "\n</essay-idea>\n" + critique)
        return "\n".join(blocks).strip() + "\n"
    return "\n\n".join(lines) + "\n"


# -- evaluations --------------------------------------------------------------------------------------


def _quality(essay: str) -> float:
    """Essay quality with about unit variance, shared by every evaluator of the same essay.

    Each line votes with its length; when a template does not delimit the essay, its own
    instruction lines shift the result a little (a mild template effect), no more.
    """
    lines = [line.strip() for line in essay.splitlines() if line.strip()] or [""]
    weights = [len(line) + 1 for line in lines]
    votes = [_unit("quality", line) for line in lines]
    z = sum(w * v for w, v in zip(weights, votes)) / math.sqrt(sum(w * w for w in weights))
    return z * math.sqrt(3)


def planted_target(prompt: str) -> frozenset[str]:
    """The concept ids a rubric's ``Target concepts:`` line names (empty when it has none)."""
    m = _TARGET_LINE.search(prompt)
    return frozenset(t.strip() for t in re.split(r"[,;]", m.group(1)) if t.strip()) if m else frozenset()


def target_shift(target: frozenset[str], concept_ids) -> float:
    """Quadratic in the share of the target present (its concepts pay off together), centred so
    that a rubric with a target spreads its scores both ways, minus a little per concept outside
    the target: the best combo is the target itself."""
    if not target or not concept_ids:
        return 0.0
    hits = len(target & set(concept_ids))
    return (TARGET_WEIGHT * ((hits / len(target)) ** 2 - 0.5)
            - TARGET_DILUTION * (len(set(concept_ids)) - hits))


def _step(request: CompletionRequest) -> float:
    if re.search(r"whole number|integer", request.prompt, re.I):
        return 1.0
    return 0.5 if request.context.scale_max - request.context.scale_min == 10 else 1.0


def simulated_score(request: CompletionRequest, rng: random.Random, effects: Effects | None = None) -> float:
    """A score on the request's scale: model bias + template bias + essay quality + planted
    evaluator effects + the planted target + noise."""
    effects = effects or Effects()
    lo, hi = float(request.context.scale_min), float(request.context.scale_max)
    p = (
        0.58
        + 0.12 * _unit("model-bias", request.model_slug)
        + 0.06 * _unit("template-bias", request.context.template_id)
        + QUALITY_WEIGHT * _quality(_focus(request.prompt))
        + effects.shift("evaluation", request)
        + target_shift(planted_target(request.prompt), request.context.concept_ids)
        + rng.gauss(0, effects.noise)
    )
    step = _step(request)
    value = lo + round(min(1.0, max(0.0, p)) * (hi - lo) / step) * step
    return min(hi, max(lo, value))


def _score_line(request: CompletionRequest, score: float) -> str:
    """The final line: the format the template asks for (``... X ...``), else one picked per template."""
    s = f"{score:g}"
    asked = re.findall(r"^[ \t]*([^\n]{0,30}?(?:score|rating)[^\n]{0,6}?)\bX\b([^\n]{0,8})$", request.prompt, re.I | re.M)
    if asked:
        before, after = asked[-1]
        return f"{before}{s}{after}".strip()
    pick = int.from_bytes(_hash("format", request.context.template_id)[:4], "big") % len(_SCORE_FORMATS)
    return _SCORE_FORMATS[pick].format(s=s, hi=f"{float(request.context.scale_max):g}")


def _evaluation(request: CompletionRequest, rng: random.Random, effects: Effects | None = None) -> str:
    score = simulated_score(request, rng, effects)
    p = (score - request.context.scale_min) / ((request.context.scale_max - request.context.scale_min) or 1)
    focus = _focus(request.prompt)
    words = _Words(_topics(request.prompt, focus), rng)
    quotes = _quotes(focus, words.topics)
    lines = ["Assessment:"]
    lines += [f"- {words.fill(reason, q=rng.choice(quotes).rstrip('.!?'))}" for reason in rng.sample(_REASONS, 3)]
    lines += ["", "Rubric breakdown:"]
    for name, top in _CRITERIA:
        sub = min(top, max(0, round(p * top + rng.uniform(-0.6, 0.6))))
        lines.append(f"- {name}: {sub}/{top}")
    if request.json_schema is not None:  # structured output: the schema's object and nothing else
        reasoning = " ".join(x.lstrip("- ").strip() for x in lines if x.strip() and not x.endswith(":"))
        return json.dumps({"reasoning": reasoning, "score": score}) + "\n"
    line = _score_line(request, score)
    if _unit("bold", request.model_slug) > 0.5 and "*" not in line and "\n" not in line:
        line = f"**{line}**"  # some judges bold their verdict
    lines += ["", line]
    return "\n".join(lines) + "\n"
