"""``evoforge export --to tokens``: token ids with exact loss masks (issue 16)."""

from __future__ import annotations

import json

import pytest

from evoforge import EngineOptions, Orca2Options, PamOptions, export, orca2, pam
from evoforge.testing.scripted import ScriptedChatModel
from helpers import read_jsonl, run_cli, write_jsonl

IM_END = "<|im_end|>"


def _pam_reply(messages, n):
    text = messages[-1]["content"]
    if "Answer to check:" in text:
        answer = text.split("Answer to check:")[1].split("Reference answer:")[0]
        verdict = "correct" if "Paris" in answer else "incorrect"
        return json.dumps(
            {"verdict": verdict, "rationale": f"The capital is Paris; I said{answer}"}
        )
    if "Why it is wrong:" in text:
        return "Paris is the capital of France, so the answer is Paris."
    number = int(text.split("#")[1].split(":")[0])
    return "Paris." if number % 2 else "It is Lyon, the city on the Rhône (ça va)."


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("transformers")
    from evoforge.io.tokens import load_chat_tokenizer

    return load_chat_tokenizer()


def _pam_records(tmp_path, n=8):
    seeds = [{"id": f"p{i}", "question": f"Question #{i}: what is the capital of France?",
              "reference": "Paris"} for i in range(n)]  # fmt: skip
    model = ScriptedChatModel(_pam_reply)
    out = tmp_path / "pam.jsonl"
    pam(seeds, out, options=EngineOptions(quiet=True), model=model, student=model)
    return out


def _split(row, tokenizer):
    """The decoded text of the trained tokens and of the masked ones, and the rendering."""
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels) == len(row["attention_mask"]) == len(row["assistant_masks"])
    assert row["assistant_masks"] == [int(label != -100) for label in labels]
    assert all(label in (-100, token) for label, token in zip(labels, ids, strict=True))
    trained = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
    masked = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab == -100])
    return trained, masked, tokenizer.decode(ids)


@pytest.mark.requires_local
def test_pam_token_masks_are_exactly_the_prompt_and_a_wrong_initial_answer(tmp_path, tokenizer):
    source = _pam_records(tmp_path)
    out = tmp_path / "tokens.jsonl"
    result = export(source, to="tokens", out=out, card=False)
    records = {r["id"]: r for r in read_jsonl(source)}
    rows = read_jsonl(out)
    assert result.count == len(rows) == 8
    verdicts = set()
    for row in rows:
        record = records[row["id"]]
        verdicts.add(record["verdict"])
        content = record["messages"][-1]["content"]
        trained, masked, text = _split(row, tokenizer)
        start = text.index(content)  # where the assistant turn's content starts
        assert text == tokenizer.apply_chat_template(record["messages"], tokenize=False)
        assert text.endswith(content + IM_END + "\n")
        if record["verdict"] == "correct":
            # The whole assistant turn and its closing <|im_end|> are trained ...
            assert trained == content + IM_END
            # ... and the masked tokens are the prompt (and the newline after the turn).
            assert masked == text[:start] + "\n"
        else:
            cut = record["segments"][0]["end"]  # the wrong initial answer ends here
            assert content[:cut] == record["initial_answer"]
            assert trained == content[cut:] + IM_END
            assert trained.startswith("\n\n" + record["verification"])
            assert masked == text[:start] + record["initial_answer"] + "\n"
        # The rule, token by token: trained iff its characters lie in a trained range.
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        assert encoded["input_ids"] == row["input_ids"]
        first = start + (0 if record["verdict"] == "correct" else record["segments"][0]["end"])
        for (a, b), label, token in zip(encoded["offset_mapping"], row["labels"],
                                        row["input_ids"], strict=True):  # fmt: skip
            inside = first <= a and b <= start + len(content) and b > a
            closer = a == start + len(content) and tokenizer.decode([token]) == IM_END
            assert (label != -100) is (inside or closer)
    assert verdicts == {"correct", "incorrect"}


@pytest.mark.requires_local
def test_chat_and_instruction_records_get_assistant_only_loss(tmp_path, tokenizer):
    seeds = [{"id": "s1", "instruction": "Name a colour.", "task": "t"}]
    model = ScriptedChatModel("Blue, like the sky.")
    orca2(seeds, tmp_path / "o.jsonl", options=EngineOptions(quiet=True), model=model,
          orca=Orca2Options(strategy_map="*=direct_answer"))  # fmt: skip
    instruction = {"id": "i1", "kind": "instruction", "instruction": "Say hi.", "output": "Hi!"}
    unanswered = {"id": "i2", "kind": "instruction", "instruction": "Say bye."}
    source = write_jsonl(tmp_path / "i.jsonl", [instruction, unanswered])
    for path, answer in ((tmp_path / "o.jsonl", "Blue, like the sky."), (source, "Hi!")):
        out = tmp_path / f"{path.stem}.tokens.jsonl"
        result = export(path, to="tokens", out=out, card=False)
        row = read_jsonl(out)[0]
        trained, masked, text = _split(row, tokenizer)
        assert trained == answer + IM_END
        assert masked == text[: text.index(answer)] + "\n"
    assert result.skipped == {"no_output": 1}


def test_a_missing_tokenizer_folder_is_one_line_and_exit_2(tmp_path):
    record = {"id": "i1", "kind": "instruction", "instruction": "Say hi.", "output": "Hi!"}
    source = write_jsonl(tmp_path / "i.jsonl", [record])
    out = tmp_path / "t.jsonl"
    result = run_cli("export", str(source), "--to", "tokens", "--out", str(out),
                     "--tokenizer", str(tmp_path / "nowhere"))  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tokenizer" in lines[0] and "no such folder" in lines[0]
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.requires_local
@pytest.mark.timeout(900)  # ~130 s of CPU (about 80 s on 2 idle cores); more on a shared machine
def test_pam_on_the_embedded_model_then_one_trl_step_with_the_hand_computed_loss(tmp_path):
    """End to end on SmolLM2-135M (student and teacher), then one SFTTrainer step with
    TRL's default collator: the reported loss is the mean cross-entropy over the
    unmasked tokens only."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from evoforge.llm.local import weights

    seeds = [{"id": f"e{i}", "question": q, "reference": a} for i, (q, a) in enumerate([
        ("What is 2 + 2?", "4"), ("What colour is the sky on a clear day?", "Blue"),
        ("What is the capital of France?", "Paris"), ("How many legs does a spider have?", "8"),
        ("What is the opposite of hot?", "Cold"),
    ])]  # fmt: skip
    out = tmp_path / "pam.jsonl"
    summary = pam(
        seeds, out, settings=PamOptions(student="local", allow_truncated=True),
        options=EngineOptions(llm="local", max_output_tokens=24, quiet=True),
    )  # fmt: skip
    records = read_jsonl(out)
    assert summary.accepted == len(records) >= 3, summary.rejected_by_reason
    for record in records:
        content = record["messages"][-1]["content"]
        for segment in record["segments"]:
            assert content[segment["start"] : segment["end"]] == record[segment["name"]]
    tokens = tmp_path / "tokens.jsonl"
    export(out, to="tokens", out=tokens, card=False)
    rows = read_jsonl(tokens)

    import datasets

    dataset = datasets.Dataset.from_list(rows).remove_columns(["id"])
    folder = weights.default_cache_dir() / weights.CACHE_SUBDIR
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor(row["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1]
            keep = labels != -100
            losses = torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="none")
            total += float(losses.sum())
            count += int(keep.sum())
    by_hand = total / count
    config = SFTConfig(
        output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=len(rows),
        learning_rate=1e-6, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        bf16=False, fp16=False, activation_checkpointing=False, dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset)
    assert type(trainer.data_collator).__name__ == "DataCollatorForLanguageModeling"
    reported = trainer.train().training_loss
    assert reported == pytest.approx(by_hand, abs=1e-4)
