"""``evoforge grow``: Self-Instruct, instruction back-translation and Magpie (issue 18)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from evoforge import EngineOptions, GrowOptions, grow
from evoforge.cli import app
from evoforge.testing.fake_openai import FakeRequest
from evoforge.testing.scripted import ScriptedChatModel
from helpers import write_jsonl

SEED_TASKS = [
    "Write a haiku about autumn leaves falling in a quiet park.",
    "Classify the sentiment of this movie review as positive or negative.",
    "Explain how a refrigerator keeps food cold to a ten year old.",
    "Translate the following sentence into French and keep the tone formal.",
    "Give three tips for staying focused while working from home.",
    "Summarize the main causes of the French Revolution in one paragraph.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Suggest a name for a bakery that specialises in sourdough bread.",
    "List the planets of the solar system in order from the sun.",
    "Is the following statement true or false: the moon has an atmosphere.",
]
VOCAB = [f"{a}{b}" for a in ("bri", "cal", "dor", "fen", "gul", "hax", "jor", "kel", "lum",
                             "mor", "nix", "pel", "quo", "rud", "sav", "tor", "vel", "wix")
         for b in ("an", "ek", "ir", "ol", "us", "ym", "az", "oth", "ine", "ura")]  # fmt: skip


CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"


def _words(text: str) -> list[str]:
    """The test's own tokenizer: lowercase Unicode \\w+, CJK ideographs one each."""
    out: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        out += re.findall(f"[{CJK}]|[^{CJK}]+", word)
    return out


def _lcs(a: list[str], b: list[str]) -> int:
    """Textbook dynamic programming, independent of evoforge's bit-parallel one."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _rouge_l(a: str, b: str) -> float:
    x, y = _words(a), _words(b)
    if not x or not y:
        return 0.0
    lcs = _lcs(x, y)
    p, r = lcs / len(x), lcs / len(y)
    return 0.0 if lcs == 0 else 2 * p * r / (p + r)


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class SelfInstructFake:
    """Replies like a model doing Self-Instruct; at least a fifth of the proposed tasks
    are near-copies of a task shown in the prompt (one word changed)."""

    def __init__(self) -> None:
        self.proposed = 0
        self.near_copies = 0

    def reply(self, prompt: str) -> str:
        if "Continue the list" in prompt:
            shown = re.findall(r"^\d+\. (.+)$", prompt, re.MULTILINE)
            start = len(shown) + 1
            lines = []
            for k in range(8):
                h = _digest(f"{prompt}|{k}")
                if k < 2:  # near-duplicate of a task in the prompt
                    words = shown[h % len(shown)].split()
                    words[h % len(words)] = "really"
                    task = " ".join(words)
                    self.near_copies += 1
                elif k == 2 and h % 3 == 0:
                    task = "Draw a picture of a cat sitting on a chair"
                else:
                    picked = [VOCAB[(h >> (5 * i)) % len(VOCAB)] for i in range(6)]
                    task = f"Explain why {' '.join(picked)} matters {h % 997}"
                self.proposed += 1
                lines.append(f"{start + k}. {task}")
            return "\n".join(lines)
        if "classification task" in prompt and "Reply with only the JSON object" in prompt:
            label = "yes" if "Classify" in prompt or "true or false" in prompt else "no"
            return json.dumps({"classification": label})
        if "choose one of the labels" in prompt:
            return json.dumps({"output": "positive", "input": "A lovely film."})
        return json.dumps({"input": "", "output": "An answer to the task."})


def _seeds(tmp_path: Path, n: int = len(SEED_TASKS)) -> Path:
    rows = [{"id": f"seed{i}", "instruction": t} for i, t in enumerate(SEED_TASKS[:n])]
    return write_jsonl(tmp_path / "seeds.jsonl", rows)


def _options(server_or_model, **extra):
    base = {"quiet": True, "concurrency": 8, "max_attempts": 2, "backoff_base": 0.01}
    if isinstance(server_or_model, str):
        base["llm"] = server_or_model
    return EngineOptions(**{**base, **extra})


def test_self_instruct_200_on_the_fake_server_none_within_rouge_07(fake_openai, tmp_path):
    fake = SelfInstructFake()
    fake_openai.responder = lambda request: fake.reply(request.last_user)
    out = tmp_path / "grown.jsonl"
    summary = grow(
        _seeds(tmp_path),
        out,
        grow=GrowOptions(method="self-instruct", n=200),
        options=_options(f"openai:fake-model@{fake_openai.base_url}"),
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.exit_code == 0 and len(records) == 200
    assert fake.near_copies / fake.proposed >= 0.2
    rejects = [json.loads(line) for line in summary.rejects.read_text().splitlines()]
    near = [r for r in rejects if r["reason"] == "near_duplicate"]
    assert len(near) >= fake.near_copies * 0.9 and all(r["lost_to"] for r in near)
    assert any(r["reason"] == "non_text" for r in rejects)
    texts = [r["instruction"] for r in records]
    for i, text in enumerate(texts):  # every record against every other and every seed
        for other in texts[i + 1 :] + SEED_TASKS:
            assert _rouge_l(text, other) < 0.7, (text, other)
    assert all(r["kind"] == "instruction" and r["output"] for r in records)
    first = records[0]
    assert [step["op"] for step in first["lineage"]][0] == "self_instruct_propose"
    assert first["meta"]["grow"]["order"] in ("input_first", "output_first")
    manifest = json.loads(summary.manifest.read_text())
    assert manifest["kept"] == {"self-instruct": 200} and manifest["shortfall"] == {}
    # a second prompt pass shows generated tasks too (2 of 8), once the pool has them
    later = [r for r in records if r["meta"]["grow"]["pass"] > 1]
    assert later and any(not i.startswith("seed") for i in later[0]["meta"]["grow"]["in_context"])


def test_self_instruct_resumes_without_calls_and_same_output(tmp_path):
    fake = SelfInstructFake()
    model = ScriptedChatModel(lambda messages, _n: fake.reply(messages[-1]["content"]))
    out = tmp_path / "run" / "grown.jsonl"
    settings = GrowOptions(n=40)
    grow(_seeds(tmp_path), out, grow=settings, options=_options(None, cache=False), model=model)
    first, calls = out.read_text(), model.call_count
    again = grow(_seeds(tmp_path), out, grow=settings, options=_options(None, cache=False),
                 model=model)  # fmt: skip
    assert model.call_count == calls and out.read_text() == first
    assert again.accepted == 40
    from evoforge import write_report

    html = write_report(tmp_path / "run")["html"].read_text()
    assert "Growing the seed set" in html and "near_duplicate" in html


def test_self_instruct_falls_short_with_a_reason_when_the_pool_saturates(tmp_path):
    # The model only ever repeats the prompt's tasks: every proposal is a near-duplicate.
    def reply(messages, _n):
        shown = re.findall(r"^\d+\. (.+)$", messages[-1]["content"], re.MULTILINE)
        return "\n".join(f"{9 + k}. {task}!" for k, task in enumerate(shown))

    summary = grow(_seeds(tmp_path), tmp_path / "o.jsonl", grow=GrowOptions(n=5),
                   options=_options(None), model=ScriptedChatModel(reply))  # fmt: skip
    assert summary.exit_code == 3 and summary.accepted == 0
    gap = summary.extra["shortfall"]["self-instruct"]
    assert gap["missing"] == 5 and gap["cause"] == "material"


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    runner = CliRunner()
    few = _seeds(tmp_path, 5)
    result = runner.invoke(app, ["grow", "--seeds", str(few), "--n", "3", "--out",
                                 str(tmp_path / "o.jsonl"), "-q"])  # fmt: skip
    assert result.exit_code == 2
    assert "at least 8 seed instructions" in result.output and "seeds.jsonl" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "nav.md").write_text("Home\nAbout\nContact\n")
    result = runner.invoke(app, ["grow", "--method", "backtranslate", "--docs", str(empty),
                                 "--n", "3", "--out", str(tmp_path / "b.jsonl"), "-q"])  # fmt: skip
    assert result.exit_code == 2 and "no text to back-translate" in result.output
    result = runner.invoke(app, ["grow", "--method", "magpie", "--n", "3", "--llm",
                                 "openai:m@http://127.0.0.1:9/v1", "--out",
                                 str(tmp_path / "m.jsonl"), "-q"])  # fmt: skip
    assert result.exit_code == 2 and "chat template" in result.output
    result = runner.invoke(app, ["grow", "--method", "backtranslate", "--seeds", str(few),
                                 "--n", "3", "--out", str(tmp_path / "c.jsonl"), "-q"])  # fmt: skip
    assert result.exit_code == 2 and "backtranslate reads --docs" in result.output


DOC = """# Tides

Tides are the regular rise and fall of the sea. They are caused mostly by the gravity of
the Moon, and to a lesser degree by the Sun. The Moon pulls the water of the ocean towards
itself, which makes a bulge on the side of the Earth facing it, and another on the far side.

As the Earth turns, each place passes through both bulges every day, which is why most
coasts see two high tides and two low tides daily. When the Sun and the Moon line up, at
new and full moon, their pulls add together and the tides are larger: these are spring
tides. At the quarter moons the pulls partly cancel, giving the smaller neap tides.

```python
def tide(height, hour):
    return height * math.cos(hour)
```

| Place | Range |
| --- | --- |
| Bay of Fundy | 16 m |

Home | About | Contact | Blog | Shop

The shape of a coastline changes the tides a great deal. In a funnel-shaped bay the water
is squeezed as it comes in, so the range can reach many metres, as in the Bay of Fundy in
Canada. In enclosed seas such as the Mediterranean the range is small, often less than
half a metre, because the sea is too small for the tidal bulge to build up.
"""


def test_backtranslate_spans_reproduce_the_source_text(fake_openai, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tides.md").write_text(DOC, encoding="utf-8")

    def responder(request: FakeRequest):
        prompt = request.last_user
        if "Rate how good" in prompt:
            return json.dumps({"reason": "A focused answer.", "score": 5 if "Moon" in prompt
                               else 3})  # fmt: skip
        return "Instruction: Explain what causes " + " ".join(prompt.split()[1:9]).lower()

    fake_openai.responder = responder
    out = tmp_path / "bt.jsonl"
    summary = grow(docs, out, grow=GrowOptions(method="backtranslate", n=5),
                   options=_options(f"openai:fake-model@{fake_openai.base_url}"))  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and summary.extra["shortfall"]  # 3 segments only: a material shortfall
    assert summary.extra["shortfall"]["backtranslate"]["cause"] == "material"
    assert summary.exit_code == 3
    for record in records:
        span = record["meta"]["source"]
        source = (docs / span["path"]).read_text(encoding="utf-8")
        assert source[span["start"] : span["end"]] == record["output"]
        assert record["meta"]["grow"]["score"] == 5
        assert "def tide" not in record["output"] and "| Place |" not in record["output"]
        assert record["instruction"].startswith("Explain what causes")
    rejects = [json.loads(line) for line in summary.rejects.read_text().splitlines()]
    assert {r["reason"] for r in rejects} == {"low_score"}
    skipped = summary.extra["documents"]["segments_skipped"]
    assert skipped.get("code") and skipped.get("table") and skipped.get("navigation")


def test_backtranslate_second_iteration_shows_the_curated_pairs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tides.md").write_text(DOC, encoding="utf-8")

    def reply(messages, _n):
        if "Rate how good" in messages[-1]["content"]:
            return json.dumps({"reason": "ok", "score": 5})
        return "Describe how tides work along different coasts."

    model = ScriptedChatModel(reply)
    out = tmp_path / "bt.jsonl"
    grow(docs, out, grow=GrowOptions(method="backtranslate", n=2, iterations=2),
         options=_options(None), model=model)  # fmt: skip
    assert (tmp_path / "bt.iter1.jsonl").exists()
    assert len(out.read_text().splitlines()) <= 2
    last_prompt = [c for c in model.calls if "Rate how good" not in c["messages"][-1]["content"]]
    assert "Instruction: Describe how tides work" in last_prompt[-1]["messages"][-1]["content"]


CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a test assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_magpie_on_the_fake_completions_endpoint(fake_openai, tmp_path):
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    count = iter(range(10**6))

    def sample(request: FakeRequest):
        k = next(count)
        if k % 4 == 3:
            return "<|im_start|>assistant\n"  # an echo of the template: rejected
        picked = " ".join(VOCAB[(k * 7 + i * 13) % len(VOCAB)] for i in range(5))
        return f"How do I explain {picked} to a colleague?<|im_end|>\nextra"

    fake_openai.text_completions.responder = sample
    out = tmp_path / "magpie.jsonl"
    summary = grow(None, out, grow=GrowOptions(method="magpie", n=6, chat_template=str(template)),
                   options=_options(f"openai:fake-model@{fake_openai.base_url}"))  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.exit_code == 0 and len(records) == 6
    prompts = {r.json["prompt"] for r in fake_openai.text_completions.requests}
    assert prompts == {
        "<|im_start|>system\nYou are a test assistant.<|im_end|>\n<|im_start|>user\n"
    }
    for record in records:
        assert (
            record["instruction"].startswith("How do I explain")
            and "<|" not in record["instruction"]
        )
        assert record["output"].startswith("ANSWER: How do I explain")
        sampling = record["meta"]["sampling"]["instruction"]
        assert sampling["temperature"] == 1.0 and sampling["stop"] == ["<|im_end|>"]
    rejects = [json.loads(line) for line in summary.rejects.read_text().splitlines()]
    assert "template_echo" in {r["reason"] for r in rejects}
    assert {r["reason"] for r in rejects} <= {"template_echo", "surplus"}


def test_the_completions_endpoint_keeps_chat_as_it_was(fake_openai):
    import asyncio

    from evoforge.llm.openai_backend import OpenAIChatModel

    async def go():
        model = OpenAIChatModel("fake-model", base_url=fake_openai.base_url)
        try:
            text = await model.complete_text("Once upon a time", max_tokens=5)
            chat = await model.complete([{"role": "user", "content": "hi"}])
        finally:
            await model.aclose()
        return text, chat

    text, chat = asyncio.run(go())
    assert text.text == "COMPLETION: Once upon a time" and text.usage.completion_tokens > 0
    assert chat.text == "ANSWER: hi" and fake_openai.hits == 1
    assert fake_openai.text_completions.hits == 1


def test_the_rouge_index_finds_exactly_what_all_pairs_finds():
    import random

    from evoforge.generators.rouge import NearDuplicateIndex

    rng = random.Random(7)
    words = VOCAB[:30] + ["the", "a", "of", "to", "and"]
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) for _ in range(150)]
    index = NearDuplicateIndex(0.7)
    for i, text in enumerate(pool):
        index.add(str(i), text)
    for _ in range(120):
        base = rng.choice(pool).split()
        for _ in range(rng.randint(0, 3)):
            base[rng.randrange(len(base))] = rng.choice(words)
        text = " ".join(base)
        brute = [i for i, other in enumerate(pool) if _rouge_l(text, other) >= 0.7]
        found = index.closest(text)
        assert (found is None) == (not brute)
        if found is not None:
            assert _rouge_l(text, pool[int(found.id)]) >= 0.7
    assert index.stats["pruned"] > 0  # the unigram bound saved exact LCS computations


def test_chinese_is_tokenized_so_near_duplicates_are_caught():
    from evoforge.generators.rouge import NearDuplicateIndex, tokenize

    assert tokenize("写一首关于秋天的诗") == list("写一首关于秋天的诗")
    index = NearDuplicateIndex(0.7)
    index.add("zh", "写一首关于秋天的诗")
    assert index.closest("写一首关于秋天的短诗") is not None
    assert index.closest("解释量子计算的基本原理") is None


RECIPE = Path(__file__).parents[1] / "examples" / "recipes" / "grow-then-evolve.yaml"


def test_grow_then_evolve_recipe_dry_runs_and_runs_on_the_fake_server(fake_openai, tmp_path):
    from test_recipe import evolve_responder

    from evoforge import plan_recipe, run_recipe

    plan = plan_recipe(RECIPE)
    assert [s.name for s in plan.steps] == ["grow", "evolvers", "dedup", "select"]
    assert plan.steps[0].records_out == 8 and plan.calls > 0
    fake = SelfInstructFake()

    def responder(request: FakeRequest):
        if "Continue the list" in request.last_user:
            return fake.reply(request.last_user)
        return evolve_responder(request)

    fake_openai.responder = responder
    llm = f"openai:fake-model@{fake_openai.base_url}"
    result = run_recipe(RECIPE, out=tmp_path / "run", llm=llm, quiet=True)
    assert result.status == "complete", [s.message for s in result.steps]
    assert [s.name for s in result.steps] == ["grow", "evolvers", "dedup", "select"]
    grown = [
        json.loads(line) for line in (tmp_path / "run" / "grow.jsonl").read_text().splitlines()
    ]
    assert len(grown) == 8 and all("output" not in r for r in grown)  # --no-instances
    final = [
        json.loads(x) for x in (tmp_path / "run" / "instructions.jsonl").read_text().splitlines()
    ]
    assert 1 <= len(final) <= 4 and all(r["output"] for r in final)


def test_magpie_dry_runs_on_the_counting_model(tmp_path):
    from evoforge.dry_run import simulate

    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    settings = GrowOptions(method="magpie", n=5, chat_template=str(template))
    plan = simulate(grow, None, tmp_path / "m.jsonl", grow=settings)
    calls = {op: stats.calls for op, stats in plan.operators.items()}
    assert calls["magpie_instruction"] == calls["magpie_response"] >= 5
