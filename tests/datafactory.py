"""A tiny but complete data root for end-to-end tests: catalogs, templates and a cohort spec
whose models talk to the test LLM server (provider ``testsrv``) or the offline simulator."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

CONCEPTS = {
    "c-alpha": ("Alpha", "Alpha is about beginnings and the first move in any search."),
    "c-beta": ("Beta", "Beta is the second try, informed by what the first one taught."),
    "c-gamma": ("Gamma", "Gamma stands for radiation: ideas that travel far from their source."),
}

TEMPLATES = {
    "draft": {
        "d-block": ("essay_block", "TASK:DRAFT\n{% for c in concepts %}- {{ c.name }}: {{ c.content }}\n{% endfor %}Answer inside <essay> tags.\n"),
    },
    "essay": {
        "e-llm": ("identity", "TASK:ESSAY\nExpand this draft:\n{{ draft_block }}\n"),
        "e-copy": ("", None),
    },
    "evaluation": {
        "v-nine": ("score", "TASK:EVAL scale 0-9\n{{ response }}\nEnd with SCORE: X\n"),
        "v-ten": ("score", "TASK:EVAL scale 0-10\n{{ response }}\nEnd with Final Score: X/10\n"),
    },
}

SPEC = """
combos:
  - concepts: [c-alpha, c-beta, c-gamma]
    k: 2
    level: paragraph
axes:
  draft_template: [d-block]
  draft_llm: [srv-a]
  evaluation_template: [v-nine, v-ten]
  evaluation_llm: [srv-b]
rules:
  tuples:
    essay_modes:
      axes: [essay_template, essay_llm]
      items: [[e-llm, srv-a], [e-copy, None]]
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))


def make_data_root(root: Path, *, spec: str = SPEC, cohort: str = "t1", provider: str = "testsrv") -> Path:
    raw = root / "1_raw"
    write(raw / "concepts_metadata.csv", "concept_id,name\n" + "".join(f"{k},{v[0]}\n" for k, v in CONCEPTS.items()))
    for cid, (_, text) in CONCEPTS.items():
        write(raw / "concepts" / "descriptions-paragraph" / f"{cid}.txt", text + "\n")
    for stage, templates in TEMPLATES.items():
        header = "template_id,template_name,description,parser,generator" + (",score_min,score_max" if stage == "evaluation" else "")
        rows = []
        for tid, (parser, text) in templates.items():
            generator = "copy" if text is None else "llm"
            scale = ""
            if stage == "evaluation":
                scale = ",0,9" if tid == "v-nine" else ",0,10"
            rows.append(f"{tid},{tid} name,test template,{parser},{generator}{scale}")
            if text is not None:
                write(raw / "templates" / stage / f"{tid}.txt", text)
        write(raw / f"{stage}_templates.csv", header + "\n" + "\n".join(rows) + "\n")
    write(raw / "llm_models.csv",
          "id,model,provider,display_name,temperature,max_tokens,input_price_per_mtok,output_price_per_mtok\n"
          f"srv-a,test/model-a,{provider},Model A,,,1.0,2.0\n"
          f"srv-b,test/model-b,{provider},Model B,0.1,512,,\n"
          "sim-a,offline/sim-a,offline,Sim A (simulated),,,,\n")
    write(root / "cohorts" / cohort / "spec" / "config.yaml", spec)
    return root


def responder(body: dict) -> str:
    """Answers in the format each test template asks for; scores depend on the essay text."""
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("TASK:DRAFT"):
        names = re.findall(r"^- (\w+):", prompt, flags=re.M)
        return "Some thinking first.\n<essay>\n" + "\n".join(f"{n} connects to the others." for n in names) + "\nA third line.\n</essay>\n"
    if prompt.startswith("TASK:ESSAY"):
        return "\r\n".join(f"Essay paragraph {i} from {body['model']}." for i in range(1, 7)) + "\r\n"
    if prompt.startswith("TASK:EVAL"):
        score = 3 + (sum(map(ord, prompt)) % 5)
        return f"Reasoning about the essay.\nOriginality: 1/2\nSCORE: {score}\n" if "0-9" in prompt else f"Reasoning.\nFinal Score: {score}/10\n"
    return "unexpected prompt"
