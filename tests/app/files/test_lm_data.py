"""jsonl data for language models: one kind of record per file, recorded as ``meta.lm_kind``,
and what a language-model job could not learn from refused with its line number."""

import json
from pathlib import Path

import pytest

from app.files.formats import UnsupportedFormat, detect


def _jsonl(tmp_path: Path, *records: object) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "tool", "content": "{}"},
]


@pytest.mark.parametrize(
    ("records", "kind"),
    [
        ([{"text": "a"}, {"text": "b", "id": 7}], "text"),
        (
            [{"prompt": "2+2=", "completion": "4"}, {"prompt": "", "completion": "x"}],
            "prompt_completion",
        ),
        ([{"messages": CHAT}, {"messages": CHAT[1:3]}], "messages"),
        ([{"prompt": "Write a poem."}, {"prompt": "Say hi."}], "prompt"),
    ],
)
def test_each_kind_is_recorded(tmp_path: Path, records: list[dict], kind: str) -> None:
    meta = detect(_jsonl(tmp_path, *records), "dataset").meta
    assert meta == {"rows": 2, "has_labels": False, "num_classes": None, "lm_kind": kind}


def test_unlabelled_text_stays_classifier_data_too(tmp_path: Path) -> None:
    meta = detect(_jsonl(tmp_path, {"text": "a"}), "dataset").meta
    assert (meta["has_labels"], meta["lm_kind"]) == (False, "text")
    labelled = detect(_jsonl(tmp_path, {"text": "a", "label": 1}), "dataset").meta
    assert (labelled["has_labels"], labelled["num_classes"], labelled["lm_kind"]) == (
        True,
        2,
        "text",
    )


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"text": "a"}, {"prompt": "b"}], "Line 2 is a prompt record, unlike the text records"),
        ([{"prompt": "a", "completion": "b"}, {"prompt": "c"}], "Line 2 is a prompt record"),
        ([{"prompt": "a"}, {"messages": CHAT}], "Line 2 is a messages record"),
        (
            [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": ""}],
            'Line 2: "completion" is empty',
        ),
        ([{"prompt": " \n"}], 'Line 1: "prompt" is empty'),
        ([{"prompt": "a", "completion": 3}], 'Line 1: "completion" must be a string'),
        (
            [{"messages": CHAT}, {"messages": [{"role": "bot", "content": "x"}]}],
            "Line 2, message 0 has role 'bot'",
        ),
        (
            [{"messages": [{"role": "user", "content": ["x"]}]}],
            'Line 1, message 0: "content" must be a string',
        ),
        ([{"messages": [{"role": "user"}]}], 'must be an object with "role" and "content"'),
        ([{"messages": []}], "non-empty list"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "Line 1 has no assistant message"),
        ([{"text": "a", "prompt": "b"}], 'Line 1 has "text" and "prompt"'),
        ([{"completion": "b"}], "Line 1 has none of them"),
        ([{"prompt": "a", "label": 1}], 'only {"text"} lines take a "label"'),
        ([{"messages": [{"role": "assistant", "content": "\ud800"}]}], "surrogate"),
        ([{"text": "a"}, ["text"]], "Line 2 must be a JSON object"),
    ],
)
def test_lm_data_problems_name_the_line(
    tmp_path: Path, records: list[object], message: str
) -> None:
    with pytest.raises(UnsupportedFormat, match=message.replace("{", r"\{").replace("}", r"\}")):
        detect(_jsonl(tmp_path, *records), "dataset")
