"""Data engine pieces without a server: prompts, parser, validator, prices/budget, the durable cache."""

import json
import shutil

import pytest

from hf_llava.datagen import TYPES
from hf_llava.datagen.cache import CacheLockedError, Key, ResponseCache
from hf_llava.datagen.parsing import ParseError, parse_description, parse_turns
from hf_llava.datagen.pricing import CostBudget, PriceTable
from hf_llava.datagen.prompts import PROMPTS_ROOT, load_prompts
from hf_llava.datagen.validate import check, reason_kind

# ---------------------------------------------------------------- prompts


def test_shipped_prompts_are_complete_and_their_examples_pass_our_own_validator():
    prompts = load_prompts("v1")
    assert prompts.version == "v1" and len(prompts.detail_instructions) >= 10
    for kind in TYPES:
        ptype = prompts.types[kind]
        assert len(ptype.examples) >= 2
        for context, output in ptype.examples:
            turns, reason = check(kind, output, "stop", instruction="Describe the image.")
            assert reason is None, f"{kind} few-shot output is rejected by our validator: {reason}"
        # boxes appear in the few-shot contexts exactly for the types that see them
        has_boxes = any("[0." in context for context, _ in ptype.examples)
        assert has_boxes == (kind != "conversation")


def test_messages_are_system_then_fewshot_pairs_then_query():
    ptype = load_prompts("v1").types["complex"]
    msgs = ptype.messages("A dog.\ndog: [0.100, 0.200, 0.300, 0.400]")
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * len(ptype.examples) + ["user"]
    assert msgs[0]["content"] == ptype.system and msgs[-1]["content"].startswith("A dog.")


def test_prompt_fingerprint_tracks_file_contents(tmp_path):
    shutil.copytree(PROMPTS_ROOT / "v1", tmp_path / "mine")
    before = load_prompts("mine", tmp_path)
    assert before.fingerprint == load_prompts("v1").fingerprint
    (tmp_path / "mine" / "detail" / "system.txt").write_text("Describe it.")
    after = load_prompts("mine", tmp_path)
    assert after.fingerprint != before.fingerprint and after.types["detail"].system == "Describe it."
    with pytest.raises(FileNotFoundError, match="'v9' not found"):
        load_prompts("v9", tmp_path)


def test_detail_instruction_is_random_across_rows_but_stable_per_row():
    prompts = load_prompts("v1")
    picks = [prompts.detail_instruction(f"{i}-detail") for i in range(60)]
    assert len(set(picks)) > 5
    assert picks == [prompts.detail_instruction(f"{i}-detail") for i in range(60)]


# ---------------------------------------------------------------- parser

CANONICAL = "Question:\nWhat is it?\n===\nAnswer:\nA red bus.\n===\nQuestion:\nWhere?\n===\nAnswer:\nOn a street."


@pytest.mark.parametrize("text", [
    CANONICAL,
    "Question: What is it?\nAnswer: A red bus.\n===\nQuestion: Where?\nAnswer: On a street.",
    "Sure! Here is the conversation.\n\nQ: What is it?\nA: A red bus.\n\nQ: Where?\nA: On a street.",
    "**Question 1:** What is it?\n**Answer 1:** A red bus.\n---\n**Question 2:** Where?\n**Answer 2:** On a street.",
    "### Question\nWhat is it?\n### Answer\nA red bus.\n### Question\nWhere?\n### Answer\nOn a street.",
    "User: What is it?\nAssistant: A red bus.\nHuman: Where?\nGPT: On a street.",
])
def test_parser_accepts_format_variations(text):
    assert parse_turns(text) == [("What is it?", "A red bus."), ("Where?", "On a street.")]


def test_parser_keeps_multiline_answers():
    turns = parse_turns("Question:\nWhy?\n===\nAnswer:\nFirst, the road is wet.\n\nSo it rained.\n")
    assert turns == [("Why?", "First, the road is wet.\n\nSo it rained.")]


@pytest.mark.parametrize("text, message", [
    ("The image shows a bus.", "no Question:/Answer: blocks"),
    ("Question: What?\nQuestion: Where?\nAnswer: Here.", "follows a question without an answer"),
    ("Answer: A bus.", "without a question"),
    ("Question: What?\nAnswer: A bus.\nQuestion: Where?", "last question has no answer"),
    ("Question:\n===\nAnswer: A bus.", "empty question"),
])
def test_parser_errors_say_what_is_wrong(text, message):
    with pytest.raises(ParseError, match=message):
        parse_turns(text)


def test_description_parser_strips_label_and_refuses_qa_blocks():
    assert parse_description("**Description:** A quiet street.\n===") == "A quiet street."
    with pytest.raises(ParseError):
        parse_description("Question: What?\nAnswer: That.")


# ---------------------------------------------------------------- validator

LONG = " ".join(["word"] * 60)


@pytest.mark.parametrize("kind, text, expected", [
    ("conversation", "", "empty output"),
    ("conversation", CANONICAL.replace("A red bus.", "As the captions say, a bus."), "mentions captions"),
    ("detail", f"{LONG}. The dog's bounding box is large.", "mentions bounding boxes"),
    ("detail", f"{LONG}. Judging by the coordinates, the dog is left.", "mentions coordinates"),
    ("detail", f"{LONG}. The dog [0.12, 0.40, 0.5, 0.9] sits.", "contains box numbers"),
    ("detail", f"{LONG}. As the given sentences show, it is sunny.", "mentions the text context"),
    ("detail", "A dog on grass.", "too short"),
    ("complex", "Question: Why?\nAnswer: Because.", "too short"),
    ("complex", f"Question: Why?\nAnswer: {LONG}\nQuestion: And?\nAnswer: {LONG}", "wrong number of turns"),
    ("conversation", "Question: What?\nAnswer: A bus.", "wrong number of turns"),
    ("conversation", "Question: What?", "unparseable"),
])
def test_validator_rejects_with_reason(kind, text, expected):
    turns, reason = check(kind, text, "stop", instruction="Describe the image.")
    assert turns is None and reason_kind(reason) == expected


def test_validator_keeps_ordinary_words_and_flags_truncation():
    text = f"{LONG}. A box of donuts sits next to the description of the menu."
    turns, reason = check("detail", text, "stop", instruction="Describe it.")
    assert reason is None and turns == [("Describe it.", text)]
    assert check("detail", text, "length", instruction="Describe it.")[1].startswith("truncated")


# ---------------------------------------------------------------- prices and budget


def test_price_lookup_by_longest_prefix_and_override(tmp_path):
    table = PriceTable.load()
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.prices["gpt-4o-mini"]
    assert table.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    assert table.cost("gpt-4o", 1_000_000, 0, batch=True) == pytest.approx(1.25)
    assert table.lookup("my-local-model") is None
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"my-local-model": {"input": 1, "output": 2}, "gpt-4o": {"input": 9, "output": 9}}))
    table = PriceTable.load(override)
    assert table.cost("my-local-model", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert table.lookup("gpt-4o") == {"input": 9.0, "output": 9.0}
    override.write_text(json.dumps({"m": {"input": 1}}))
    with pytest.raises(ValueError, match="'m'"):
        PriceTable.load(override)


def test_budget_reserves_worst_case_and_settles_real_cost():
    prices = PriceTable({"m": {"input": 1.0, "output": 1.0}})  # $1 per 1M tokens
    budget = CostBudget(prices, "m", max_cost=0.0101, max_tokens=1000)  # room for 5 worst cases
    first = budget.reserve(3000)  # ~1000 prompt tokens + 1000 output = ~$0.002
    assert first == pytest.approx(0.002, rel=0.01)
    reservations = [budget.reserve(3000) for _ in range(4)]
    assert all(reservations) and budget.reserve(3000) is None and budget.open == 5
    cost = budget.settle(first, {"prompt_tokens": 500, "completion_tokens": 100}, prompt_chars=3000)
    assert cost == pytest.approx(0.0006) and budget.spent == pytest.approx(0.0006)
    assert budget.chars_per_token == 3.0  # observed 6 chars/token is less conservative: keep 3
    assert budget.settle(reservations[0], None) == reservations[0]  # no usage: charged the worst case
    with pytest.raises(ValueError, match="--price-table"):
        CostBudget(prices, "unknown-model", max_cost=1.0, max_tokens=10)


# ---------------------------------------------------------------- cache


def test_key_round_trip_and_model_may_contain_separators():
    key = Key("42", "detail", "v1", "org/model|q4")
    assert Key.parse(str(key)) == key
    with pytest.raises(ValueError):
        Key("4|2", "detail", "v1", "m")


def test_cache_survives_reopen_torn_tail_and_refuses_duplicates(tmp_path):
    path = tmp_path / "cache.jsonl"
    a, b = Key("1", "detail", "v1", "m"), Key("2", "detail", "v1", "m")
    with ResponseCache(path) as cache:
        cache.append(a, {"status": "ok", "content": "x"})
        cache.append(b, {"status": "failed", "error": "boom"})
        with pytest.raises(RuntimeError, match="duplicate"):
            cache.append(a, {"status": "ok", "content": "again"})
    with open(path, "ab") as f:  # a write that never completed (power loss mid-line)
        f.write(b'{"key": "2|detail|v1|m", "status": "ok", "cont')
    with ResponseCache(path) as cache:
        assert cache.is_done(a) and not cache.is_done(b) and cache.failed[b]["error"] == "boom"
        cache.append(b, {"status": "ok", "content": "y"})
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    with ResponseCache(path) as cache:
        assert cache.ok[b]["content"] == "y" and not cache.failed


def test_cache_corruption_names_the_line_and_second_writer_is_refused(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "1|detail|v1|m", "status": "ok"}\nnot json\n{"key": "2|detail|v1|m", "status": "ok"}\n')
    with pytest.raises(ValueError, match=r"cache.jsonl:2: corrupt"):
        ResponseCache(path).open()
    path.write_text("")
    with ResponseCache(path):
        with pytest.raises(CacheLockedError, match="another"):
            ResponseCache(path).open()


@pytest.mark.parametrize(("flag", "value"), [("--concurrency", "0"), ("--concurrency", "-3"), ("--batch-size", "0"),
                                             ("--limit", "0"), ("--max-cost", "-1"), ("--timeout", "0")])
def test_nonsense_values_are_refused_where_parsed(flag, value, tmp_path, capsys):
    from hf_llava.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["generate-data", "--captions", "c.json", "--output-dir", str(tmp_path), flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be at least" in capsys.readouterr().err
