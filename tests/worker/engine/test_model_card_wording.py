"""The model card's wording on facts chosen by hand: how it compares the student's size and speed
with the teacher's (never "smaller" or "faster" when it is not), what it says when the validation
rows come from the training file, and that what a user named (the job, its files, its classes)
cannot add Markdown or HTML of its own. No training: the facts are the card's whole input."""

import re

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tests.helpers.teachers import job_spec
from worker.engine.model_card import CardFacts, render

OVERLAP = "If the teacher was trained on that file, it has seen them"
NOT_SMALLER = "The student is not smaller than its teacher"


def _facts(teacher_params: int, student_params: int, teacher_ms: float, student_ms: float,
           **overrides) -> CardFacts:  # fmt: skip
    metrics = {
        "teacher_accuracy": 0.97,
        "student_accuracy": 0.95,
        "agreement": 0.96,
        "kl_divergence": 0.04,
        "teacher_params": teacher_params,
        "student_params": student_params,
        "compression_ratio": teacher_params / student_params,
        "student_size_bytes": 4 * student_params,
        "teacher_latency_ms": teacher_ms,
        "student_latency_ms": student_ms,
        "speedup": teacher_ms / student_ms,
        "train_seconds": 1.0,
        "device": "cpu",
        "teacher_cache": "computed",
    }
    fields = {
        "spec": job_spec(),
        "metrics": metrics,
        "history": {"student": [{"epoch": 1, "train_loss": 1.0, "val_accuracy": 0.95}]},
        "teacher_format": "torchscript",
        "teacher_bytes": 4 * teacher_params,
        "student_arch": {"arch": "mlp", "hidden_sizes": [32]},
        "input_shape": (64,),
        "num_outputs": 10,
        "class_names": None,
        "train_rows": 1000,
        "val_rows": 100,
        "validation_split": False,
        "text": False,
        "artifacts": ["student.pt", "student.safetensors", "student.json", "metrics.json"],
        "job_id": "job_1",
    }
    return CardFacts(**(fields | overrides))


def _summary(card: str) -> str:
    """The sentence under the title."""
    return card.split("\n\n")[1]


def _row(card: str, name: str) -> str:
    (row,) = [line for line in card.splitlines() if line.startswith(f"| {name} |")]
    return row


def test_a_smaller_faster_student_is_called_so() -> None:
    card = render(_facts(151_306, 4_810, 0.264, 0.057))

    assert "31.5x fewer parameters, 4.6x faster at batch 1 on `cpu`." in _summary(card)
    assert _row(card, "compression (teacher / student parameters)").endswith("| 31.5x |")
    assert _row(card, "speedup (teacher / student latency)").endswith("| 4.6x |")
    assert NOT_SMALLER not in card


def test_a_larger_slower_student_is_called_larger_and_slower() -> None:
    card = render(_facts(100, 1_330, 0.010, 0.041))

    assert "13.3x more parameters, 4.1x slower at batch 1 on `cpu`." in _summary(card)
    assert not re.search(r"fewer parameters|faster", card)
    assert _row(card, "compression (teacher / student parameters)").endswith(
        "| 0.075x (the student has 13.3x more parameters) |"
    )
    assert _row(card, "speedup (teacher / student latency)").endswith(
        "| 0.24x (the student is 4.1x slower) |"
    )
    assert f"- {NOT_SMALLER}: it has 13.3x more parameters (1,330 against 100)" in card


def test_a_student_of_the_teachers_size_has_as_many_parameters() -> None:
    card = render(_facts(50_826, 50_826, 0.100, 0.098))

    assert "as many parameters as the teacher, about as fast as the teacher" in _summary(card)
    assert "about as many" not in card and "1.0x" not in _summary(card)
    assert f"- {NOT_SMALLER}: it has as many parameters as the teacher" in card


def test_a_smaller_but_slower_student_is_called_slower() -> None:
    card = render(_facts(10_000, 5_000, 0.050, 0.100))

    assert "2.0x fewer parameters, 2.0x slower at batch 1" in _summary(card)
    assert NOT_SMALLER not in card


@pytest.mark.parametrize("split", [True, False])
def test_a_validation_split_of_the_training_file_may_overlap_the_teachers_training(
    split: bool,
) -> None:
    card = render(_facts(1_000, 100, 1.0, 0.1, validation_split=split))

    caveats = card.split("## Caveats")[1]
    assert (OVERLAP in caveats) is split
    validation = _row(card, "validation data")
    assert ("a seeded 10% split of the training file" in validation) is split


# -- what users named ------------------------------------------------------------------------

HOSTILE_NAME = "evil\n# Injected <script>alert(1)</script> *bold* [link](http://x.test) | x #"
HOSTILE_FILES = {"teacher": "t`ea|cher.pt", "train": "``train``.npz", "validation": "<b>v</b>.npz"}
HOSTILE_CLASSES = ["cat|dog", "`tick`", "<img src=x>", "a\nb"]


def _tokens(card: str) -> list[Token]:
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    tokens = md.parse(card)
    return tokens + [child for t in tokens for child in t.children or []]


def test_names_a_user_chose_add_no_markdown_or_html_of_their_own() -> None:
    spec = job_spec(name=HOSTILE_NAME)
    facts = _facts(1_000, 100, 1.0, 0.1, spec=spec, file_names=HOSTILE_FILES,
                   class_names=HOSTILE_CLASSES)  # fmt: skip

    card = render(facts)

    tokens = _tokens(card)
    assert not [t for t in tokens if t.type.startswith("html")]
    assert not [t for t in tokens if t.type in ("link_open", "em_open", "strong_open")]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings[0] == (
        r"Model card: evil \# Injected \<script\>alert(1)\</script\> \*bold\* "
        r"\[link\](http://x.test) \| x \# (`job_1`)"
    )
    assert [h for h in headings if "Injected" in h] == headings[:1]
    # each name is one code span holding it exactly (a newline read as a space), in its cell
    code = [t.content for t in tokens if t.type == "code_inline"]
    for name in [*HOSTILE_FILES.values(), *HOSTILE_CLASSES]:
        assert name.replace("\n", " ") in code, name
    rows = {r: _row(card, r) for r in ("teacher", "training data", "validation data", "classes")}
    for row in rows.values():  # two cells each: no pipe of a name split a row
        assert len(re.findall(r"(?<!\\)\|", row)) == 3, row
    # the spec block still holds the name as given, in one JSON string
    (block,) = re.findall(r"```json\n(.*?)\n```", card, flags=re.S)
    assert '"name": "evil\\n# Injected' in block
