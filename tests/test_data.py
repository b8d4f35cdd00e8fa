"""Tests of the preference-data loader (Chapter 02): every shape, every source, every error."""

import json
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict

from course_lib import world
from course_lib.world import data
from course_lib.world.data import load_preferences, parse_conversation, render_conversation

PLAIN = [
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "category": "chat"},
    {"prompt": "2+2?", "chosen": "4", "rejected": "5", "category": "reasoning"},
]
HH = [
    {
        "chosen": "\n\nHuman: Capital of France?\n\nAssistant: Paris.",
        "rejected": "\n\nHuman: Capital of France?\n\nAssistant: Lyon.",
        "category": "chat",
    },
    {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 4",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 5",
        "category": "reasoning",
    },
]
HH_EXPECTED = [
    ("Human: Capital of France?\n\nAssistant:", "Paris.", "Lyon."),
    ("Human: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant:", "4", "5"),
]


def _msg(role, content):
    return {"role": role, "content": content}


# UltraFeedback-binarized style: prompt string, chosen/rejected include the user turn.
CONVERSATIONAL = [
    {
        "prompt": "Capital of France?",
        "chosen": [_msg("user", "Capital of France?"), _msg("assistant", "Paris.")],
        "rejected": [_msg("user", "Capital of France?"), _msg("assistant", "Lyon.")],
        "category": "chat",
    },
    {
        "prompt": "Hi",
        "chosen": [_msg("user", "Hi"), _msg("assistant", "Hello!"), _msg("user", "2+2?"), _msg("assistant", "4")],
        "rejected": [_msg("user", "Hi"), _msg("assistant", "Hello!"), _msg("user", "2+2?"), _msg("assistant", "5")],
        "category": "reasoning",
    },
]
CONVERSATIONAL_EXPECTED = [
    ("Capital of France?", "Paris.", "Lyon."),
    ("User: Hi\nAssistant: Hello!\nUser: 2+2?", "4", "5"),
]
SHAPES = {
    "plain": (PLAIN, [(r["prompt"], r["chosen"], r["rejected"]) for r in PLAIN]),
    "hh": (HH, HH_EXPECTED),
    "conversational": (CONVERSATIONAL, CONVERSATIONAL_EXPECTED),
}


def write_records(records, path):
    """Write records in the format given by the file suffix."""
    if path.suffix == ".json":
        path.write_text(json.dumps(records))
    elif path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    elif path.suffix == ".csv":
        pd.DataFrame(records).to_csv(path, index=False)
    return path


def triples(dataset):
    return list(zip(dataset["prompt"], dataset["chosen"], dataset["rejected"]))


def plain_rows(n):
    return [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "pair_id": i} for i in range(n)]


# ----------------------------------------------------------------------------- shapes x formats


@pytest.mark.parametrize(
    "shape, suffix",
    [(s, x) for s in ("plain", "hh") for x in (".json", ".jsonl", ".parquet", ".csv")]
    + [("conversational", x) for x in (".json", ".jsonl", ".parquet")],
)
def test_each_shape_loads_from_each_file_format(tmp_path, shape, suffix):
    records, expected = SHAPES[shape]
    ds = load_preferences(write_records(records, tmp_path / f"prefs{suffix}"))
    assert triples(ds) == expected
    assert ds.column_names[:3] == ["prompt", "chosen", "rejected"]
    assert ds["category"] == ["chat", "reasoning"]  # metadata kept, in order
    assert all(ds.features[name] == datasets.Value("string") for name in ("prompt", "chosen", "rejected"))


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_loads_from_memory(shape):
    records, expected = SHAPES[shape]
    assert triples(load_preferences(records)) == expected
    assert triples(load_preferences(Dataset.from_list(records))) == expected


def test_trl_conversational_prompt_list_and_reply_only():
    row = {
        "prompt": [_msg("system", "Be brief."), _msg("user", "2+2?")],
        "chosen": [_msg("assistant", "4")],
        "rejected": [_msg("assistant", "5")],
    }
    assert triples(load_preferences([row])) == [("System: Be brief.\nUser: 2+2?", "4", "5")]


def test_plain_strings_are_kept_verbatim_and_hh_prompt_plus_reply_rebuilds_text():
    row = {"prompt": "  spaced  ", "chosen": " a ", "rejected": "b"}
    assert triples(load_preferences([row])) == [("  spaced  ", " a ", "b")]
    prompt, chosen, _ = triples(load_preferences(HH))[1]
    assert "\n\n" + prompt + " " + chosen == HH[1]["chosen"]


def test_hh_split_uses_shared_history_when_reply_contains_assistant_marker():
    row = {
        "chosen": "\n\nHuman: Act out a chat.\n\nAssistant: Sure. Human: hi Assistant: hey",
        "rejected": "\n\nHuman: Act out a chat.\n\nAssistant: No.",
    }
    assert triples(load_preferences([row])) == [
        ("Human: Act out a chat.\n\nAssistant:", "Sure. Human: hi Assistant: hey", "No.")
    ]


def test_csv_keeps_na_like_text_as_text(tmp_path):
    rows = [{"prompt": "Say NA", "chosen": "NA", "rejected": "None"}]
    assert triples(load_preferences(write_records(rows, tmp_path / "p.csv"))) == [("Say NA", "NA", "None")]


def test_render_and_parse_conversation_are_inverse():
    messages = [
        _msg("system", "Be brief."),
        _msg("user", "Hi\nthere"),
        _msg("assistant", "Hello."),
        _msg("user", "2+2?"),
    ]
    text = render_conversation(messages)
    assert text == "System: Be brief.\nUser: Hi\nthere\nAssistant: Hello.\nUser: 2+2?"
    assert parse_conversation(text) == messages
    assert render_conversation([_msg("user", "Just this")]) == "Just this"
    assert parse_conversation("Just this") == [_msg("user", "Just this")]


def test_selected_dataset_and_metadata_stay_aligned():
    ds = Dataset.from_list(plain_rows(5)).shuffle(seed=0).select([3, 1])
    out = load_preferences(ds)
    assert out["pair_id"] == ds["pair_id"]
    assert out["prompt"] == [f"q{i}" for i in ds["pair_id"]]


# ----------------------------------------------------------------------------- other sources


def test_saved_dataset_folder_and_datasetdict_pick_the_split(tmp_path):
    splits = DatasetDict({"train": Dataset.from_list(PLAIN), "test": Dataset.from_list(PLAIN[:1])})
    splits.save_to_disk(tmp_path / "saved")
    assert load_preferences(tmp_path / "saved", split="test").num_rows == 1
    assert load_preferences(splits, split="train").num_rows == 2
    with pytest.raises(ValueError, match=r"split 'validation' not in .*available: train, test"):
        load_preferences(splits, split="validation")


def test_data_folder_goes_through_load_dataset_with_split(tmp_path):
    folder = tmp_path / "hub_like"
    folder.mkdir()
    write_records(PLAIN, folder / "train.jsonl")
    write_records(PLAIN[:1], folder / "test.jsonl")
    assert triples(load_preferences(str(folder), split="test")) == triples(load_preferences(PLAIN[:1]))


def test_hub_name_calls_datasets_load_dataset_with_name_and_split(tmp_path, monkeypatch):
    local = write_records(HH, tmp_path / "hh.jsonl")
    calls = []

    def fake_hub(name, split, **kwargs):
        calls.append((name, split, kwargs))
        return datasets.load_dataset("json", data_files=str(local), split="train")

    monkeypatch.setattr(data, "load_dataset", fake_hub)
    ds = load_preferences("Anthropic/hh-rlhf", split="test", data_dir="harmless-base")
    assert calls == [("Anthropic/hh-rlhf", "test", {"data_dir": "harmless-base"})]
    assert triples(ds) == HH_EXPECTED


def test_hub_failure_says_what_to_do(monkeypatch):
    def missing(name, split, **kwargs):
        raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")

    monkeypatch.setattr(data, "load_dataset", missing)
    with pytest.raises(FileNotFoundError, match=r"'no-org/no-data' is not a local file.*pass a path to a \.json"):
        load_preferences("no-org/no-data")


def test_world_config_source():
    config = world.WorldConfig()
    expected = world.generate_preference_pairs(config)
    ds = load_preferences(config)
    assert ds.num_rows == expected.num_rows
    assert ds["chosen"] == list(expected["chosen"])
    assert {"category", "is_flipped", "pair_id"} <= set(ds.column_names)


# ----------------------------------------------------------------------------- errors


def _with(rows, index, **changes):
    rows = [dict(r) for r in rows]
    rows[index].update(changes)
    for key, value in changes.items():
        if value is ...:
            del rows[index][key]
    return rows


@pytest.mark.parametrize(
    "index, changes, message",
    [
        (3, {"rejected": ...}, "row 3: missing key 'rejected'"),
        (4, {"chosen": None}, "row 4: missing key 'chosen'"),
        (17, {"chosen": ""}, "row 17: 'chosen' is empty"),
        (2, {"rejected": " \n "}, "row 2: 'rejected' is empty"),
        (6, {"prompt": ""}, "row 6: 'prompt' is empty"),
        (5, {"rejected": "good 5"}, "row 5: 'chosen' and 'rejected' are identical"),
        (8, {"prompt": 5}, "row 8: 'prompt' must be a string or a list of messages, got int"),
        (9, {"chosen": 1.5}, "row 9: 'chosen' must be a string or a list of messages, got float"),
        (1, {"chosen": [_msg("assistant", "x")]}, "row 1: 'chosen' is a list but 'rejected' is a str"),
        (0, {"prompt": ...}, "row 0: missing key 'prompt'"),
    ],
)
def test_invalid_row_error_names_row_and_field(index, changes, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        load_preferences(_with(plain_rows(20), index, **changes))


@pytest.mark.parametrize(
    "chosen, rejected, message",
    [
        ([_msg("user", "a")], [_msg("user", "b")], "'chosen' must end with an assistant message, got role 'user'"),
        ([_msg("bot", "a")], [_msg("assistant", "b")], "'chosen' message 0 has role 'bot'"),
        ([_msg("assistant", 3)], [_msg("assistant", "b")], "'chosen' message 0 'content' must be a string, got int"),
        ([{"text": "a"}], [_msg("assistant", "b")], "'chosen' message 0 must be a dict with 'role' and 'content'"),
        ([_msg("assistant", "a")], [], "'rejected' is an empty list of messages"),
        (
            [_msg("user", "x"), _msg("assistant", "a")],
            [_msg("user", "y"), _msg("assistant", "b")],
            "'chosen' and 'rejected' have different conversation histories",
        ),
    ],
)
def test_invalid_conversation_errors(chosen, rejected, message):
    rows = plain_rows(3) + [{"prompt": "p", "chosen": chosen, "rejected": rejected}]
    with pytest.raises(ValueError, match="^" + re.escape(f"row 3: {message}")):
        load_preferences(rows)


def test_wrong_type_in_jsonl_file_is_a_row_error(tmp_path):
    path = write_records(_with(plain_rows(10), 8, prompt=5), tmp_path / "p.jsonl")
    with pytest.raises(ValueError, match=r"^row 8: 'prompt' must be a string or a list of messages, got int"):
        load_preferences(path)


def test_empty_cell_in_csv_is_an_empty_field(tmp_path):
    path = write_records(_with(plain_rows(10), 7, chosen=""), tmp_path / "p.csv")
    with pytest.raises(ValueError, match=r"^row 7: 'chosen' is empty"):
        load_preferences(path)


def test_error_counts_further_invalid_rows_and_suggests_drop_invalid():
    rows = _with(_with(plain_rows(10), 2, chosen=""), 6, rejected="good 6")
    with pytest.raises(ValueError, match=r"^row 2: 'chosen' is empty \(1 more invalid rows; pass drop_invalid=True"):
        load_preferences(rows)


def test_drop_invalid_drops_and_reports_the_count():
    rows = _with(_with(_with(plain_rows(10), 2, chosen=""), 6, rejected="good 6"), 9, prompt=5)
    with pytest.warns(UserWarning, match=r"dropped 3 of 10 rows as invalid; first: row 2: 'chosen' is empty"):
        ds = load_preferences(rows, drop_invalid=True)
    assert ds["pair_id"] == [0, 1, 3, 4, 5, 7, 8]
    assert ds["prompt"] == [f"q{i}" for i in ds["pair_id"]]


def test_all_rows_invalid_is_an_error_even_with_drop_invalid():
    rows = [{"question": "q", "chosen": "a", "rejected": "b"}] * 3
    with pytest.raises(ValueError, match=r"^row 0: missing key 'prompt'.*all 3 rows are invalid"):
        load_preferences(rows, drop_invalid=True)


def test_unknown_suffix_says_which_formats_work(tmp_path):
    path = tmp_path / "prefs.txt"
    path.write_text("prompt,chosen,rejected\n")
    expected = r"unsupported file type '\.txt'.*use one of \.json, \.jsonl, \.parquet, \.csv"
    with pytest.raises(ValueError, match=expected):
        load_preferences(path)


@pytest.mark.parametrize("name", ["missing.jsonl", "./data/prefs", "~/nowhere/prefs.parquet"])
def test_missing_file_says_what_to_do(name):
    with pytest.raises(FileNotFoundError, match=r"no such file or folder .*check the path"):
        load_preferences(name)


def test_bad_json_line_names_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(PLAIN[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"line 2 is not valid JSON"):
        load_preferences(path)


def test_unsupported_source_type_and_empty_source():
    with pytest.raises(TypeError, match=r"source must be .* got int"):
        load_preferences(42)
    with pytest.raises(ValueError, match="has no rows"):
        load_preferences([])
