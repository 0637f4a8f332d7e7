"""A language model's card from hand-made facts: its numbers and verdict, the teacher signal's
explanation, generations that cannot break the table, and no verdict without a baseline."""

import math
import re
from pathlib import Path
from typing import Any

from jobspec import JobSpec
from worker.engine.lm.card import Generations, LMCardFacts, render, write_lm_model_card

METRICS = {
    "teacher_perplexity": 12.345,
    "student_perplexity": 18.2,
    "baseline_perplexity": 21.7,
    "token_agreement": 0.6123,
    "kl_divergence": 0.4321,
    "teacher_params": 134_515_008,
    "student_params": 67_257_504,
    "compression_ratio": 2.0,
    "teacher_tokens_per_second": 45.2,
    "student_tokens_per_second": 88.1,
    "speedup": 1.949,
    "train_seconds": 123.4,
    "train_tokens": 30_000,
    "teacher_cache": "miss",
    "teacher_signal_bytes_per_token": 136.5,
    "teacher_signal_kl": 0.0123,
    "device": "cuda",
}
HISTORY = {
    "student": [
        {"epoch": 1, "train_loss": 2.5, "val_loss": 3.0, "val_perplexity": 20.1,
         "val_token_agreement": 0.55},
        {"epoch": 2, "train_loss": 2.1, "val_loss": 2.9, "val_perplexity": 18.2,
         "val_token_agreement": 0.61},
    ],
    "baseline": [
        {"epoch": 1, "train_loss": 3.5, "val_loss": 3.2, "val_perplexity": math.inf,
         "val_token_agreement": 0.5},
        {"epoch": 2, "train_loss": 3.1, "val_loss": 3.1, "val_perplexity": 21.7,
         "val_token_agreement": 0.52},
    ],
}  # fmt: skip


def _spec(**overrides: Any) -> JobSpec:
    spec = {
        "task": "causal_lm",
        "teacher": {"file_id": "file_teacher"},
        "student": {"arch": "from_teacher", "layers": [0, 2, 4]},
        "data": {"train_file_id": "file_train"},
        "baseline": True,
        "hyperparameters": {"epochs": 2, "alpha": 0.9, "temperature": 2.0},
    }
    return JobSpec.model_validate(spec | overrides)


def _facts(**changes: Any) -> LMCardFacts:
    facts = LMCardFacts(
        job_id="job_1",
        file_names={"teacher": "smollm2.gguf", "train": "reviews.jsonl"},
        spec=_spec(),
        metrics=dict(METRICS),
        history=HISTORY,
        generations=[Generations("The film is", " good.", " great.", " fine.", " bad.")],
        warnings=[],
    )
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def _row(card: str, label: str) -> str:
    return next(line for line in card.splitlines() if line.startswith(f"| {label} |"))


def test_the_card_says_the_numbers() -> None:
    card = render(_facts())
    assert _row(card, "perplexity") == "| perplexity | 12.35 | 18.20 | 21.70 |"
    assert "61.23%" in _row(card, "top-1 token agreement")
    assert "0.4321" in card
    assert "134,515,008" in card and "67,257,504" in card
    assert "2.0x" in _row(card, "compression (teacher / student parameters)")
    assert "1.9x" in _row(card, "speedup (student / teacher tokens per second)")
    assert _row(card, "generation, greedy, batch 1").startswith(
        "| generation, greedy, batch 1 | 45.2 tokens/s | 88.1 tokens/s |"
    )
    assert "`cuda`" in card
    assert "30,000" in card and "123.4 s" in card


def test_the_card_says_whether_distillation_beat_the_baseline_and_by_how_much() -> None:
    card = render(_facts())
    assert "**Distillation beat the baseline**" in card
    assert "16.1% below the baseline's (18.20 against 21.70)" in card  # (21.7 - 18.2) / 21.7

    worse = _facts(metrics=METRICS | {"student_perplexity": 23.87})
    card = render(worse)
    assert "**Distillation did not beat the baseline**" in card
    assert "10.0% above the baseline's (23.87 against 21.70)" in card
    assert "distillation did not earn its keep here" in card


def test_no_baseline_no_verdict() -> None:
    metrics = {k: v for k, v in METRICS.items() if k != "baseline_perplexity"}
    spec = _spec(baseline=False)
    card = render(_facts(metrics=metrics, spec=spec, history={"student": HISTORY["student"]}))
    assert "beat the baseline" not in card
    assert "There is no baseline" in card
    assert "| perplexity | 12.35 | 18.20 |\n" in card  # no baseline column
    assert "baseline train loss" not in card


def test_an_infinite_perplexity_gives_no_verdict() -> None:
    card = render(_facts(metrics=METRICS | {"baseline_perplexity": math.inf}))
    assert "beat the baseline" not in card
    assert "| perplexity | 12.35 | 18.20 | ∞ |" in card


def test_the_loss_and_the_teacher_signal_are_explained() -> None:
    card = render(_facts())
    assert (
        "0.9 \N{MULTIPLICATION SIGN} forward KL, KL(teacher ‖ student), at temperature T = 2"
        in card
    )
    assert "0.1 \N{MULTIPLICATION SIGN} the cross-entropy of the target tokens" in card
    assert "128 draws from the teacher's distribution" in card
    assert "| stored bytes per token | 136.5 |" in card
    assert "| teacher_signal_kl | 0.0123 |" in card
    assert "an unbiased estimate of the full distribution" in card
    assert "| cache | miss: this job ran the teacher once" in card

    top_k = render(_facts(spec=_spec(hyperparameters={"teacher_signal": "top_k"})))
    assert "the top 64 log-probabilities" in top_k and "draws from" not in top_k
    assert "from the teacher's full distribution to the top-64 one" in top_k

    jsd = _spec(losses={"logits": "jsd", "beta": 0.3})
    assert "Jensen-Shannon divergence, as GKD with beta 0.3" in render(_facts(spec=jsd))
    hit = render(_facts(metrics=METRICS | {"teacher_cache": "hit"}))
    assert "| cache | hit: read from the store" in hit


def test_a_dense_online_teacher_has_no_stored_signal() -> None:
    spec = _spec(hyperparameters={"teacher_top_k": 0})
    metrics = METRICS | {"teacher_cache": "off"}
    del metrics["teacher_signal_bytes_per_token"], metrics["teacher_signal_kl"]
    card = render(_facts(spec=spec, metrics=metrics))
    assert "the full distribution (`teacher_top_k` 0), online" in card
    assert "teacher_signal_kl" not in card.split("## The job")[0]
    assert "| cache | off: the teacher ran online" in card


def test_generations_are_escaped_into_one_table_row_each() -> None:
    nasty = Generations(
        prompt="A | B",
        reference=None,
        teacher="line one\nline **two**\r\n# three",
        student="<script>alert(1)</script> `x` [link](http://e.x)",
        baseline="",
    )
    card = render(_facts(generations=[nasty]))
    section = card.split("## Generations")[1].split("## Training curves")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows[0] == "| prompt | teacher | student | baseline |"  # no reference column
    assert len(rows) == 3  # head, rule, one row: no line break escaped the cell
    cells = re.split(r"(?<!\\)\|", rows[2])[1:-1]
    assert len(cells) == 4  # the pipe in the prompt is escaped, not a cell border
    assert cells[0].strip() == "A \\| B"
    assert cells[1].strip() == "line one<br>line \\*\\*two\\*\\*<br>\\# three"
    assert "<script>" not in card and "\\<script\\>" in cells[2]
    assert "\\`x\\`" in cells[2] and "\\[link\\]" in cells[2]
    assert cells[3].strip() == "*(nothing)*"


def test_references_and_missing_baselines_get_their_columns() -> None:
    generations = [Generations("p", " ref", " t", " s", None)]
    card = render(_facts(generations=generations))
    assert "| prompt | reference | teacher | student |\n" in card
    assert "| p | ref | t | s |" in card


def test_warnings_are_caveats_and_escaped() -> None:
    card = render(_facts(warnings=["The student is *not* smaller | than its teacher"]))
    caveats = card.split("## Caveats")[1]
    assert "- The student is \\*not\\* smaller \\| than its teacher" in caveats


def test_user_written_names_cannot_add_markdown() -> None:
    spec = _spec(name="# [click](http://evil) | x")
    card = render(_facts(spec=spec, file_names={"teacher": "t`e|a.gguf"}))
    assert card.startswith("# Model card: \\# \\[click\\](http://evil) \\| x (`job_1`)\n")
    assert "| teacher | ``t`e\\|a.gguf`` (`file_teacher`), 134,515,008 parameters |" in card


def test_the_student_is_described_by_its_kind() -> None:
    cut = render(_facts())
    assert "| student | the teacher's layers 0, 2, 4, cut by depth, 67,257,504 parameters |" in cut
    pretrained = _spec(student={"file_id": "file_small"})
    names = {"teacher": "smollm2.gguf", "train": "reviews.jsonl", "student": "small.zip"}
    card = render(_facts(spec=pretrained, file_names=names))
    assert "the pretrained model `small.zip` (`file_small`), trained further" in card
    config = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64}
    card = render(_facts(spec=_spec(student={"arch": "hf", "config": config})))
    assert "model_type llama, num_hidden_layers 2, hidden_size 64" in card


def test_writes_the_card_and_the_curves(tmp_path: Path) -> None:
    paths = write_lm_model_card(tmp_path, _facts())
    assert [p.name for p in paths] == ["curves.svg", "model_card.md"]
    svg = (tmp_path / "curves.svg").read_text()
    assert "validation perplexity" in svg and "train loss" in svg
    assert svg.count('<polyline class="student"') == 2
    assert svg.count('<polyline class="baseline"') == 2
    assert "inf" not in svg  # an infinite perplexity is left out of the chart, not plotted
    card = (tmp_path / "model_card.md").read_text()
    assert "![Training loss and validation perplexity](curves.svg)" in card
    assert "| 1 | 2.5 | 20.10 | 55.00% | 3.5 | ∞ | 50.00% |" in card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.svg", "model_card.md"]
