"""Language-model jobs through the engine's one entry point, on a tiny Llama teacher trained in
the test process: the stored signal (written once, then read), the student kinds, the losses,
resume, sweeps, and what a finished job hands back."""

import json
import math
import zipfile
from pathlib import Path

import pytest

from jobspec import JobSpec
from tests.helpers.lm import (
    lm_corpus,
    lm_tokenizer,
    messages_rows,
    prompt_completion_rows,
    prompt_rows,
    text_rows,
    trained_lm_teacher,
    write_jsonl,
)
from tests.helpers.text import write_hf_archive
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineError, EngineJob, EngineResult, JobCancelled, run_job
from worker.engine.lm.card import LOSS_NAMES
from worker.engine.lm.results import CARD_PROMPTS

STUDENT = {"arch": "from_teacher", "layers": [0, 3]}
NARROW = {  # an hf student half the teacher's width (64): layer matching needs projections
    "arch": "hf",
    "config": {
        "model_type": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    },
}


@pytest.fixture(scope="module")
def teacher_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lm_teacher")
    return write_hf_archive(trained_lm_teacher(), lm_tokenizer(), folder / "teacher.zip")


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lm_texts")
    return write_jsonl(folder / "train.jsonl", text_rows(lm_corpus(160, seed=5)))


def spec(**changes: object) -> JobSpec:
    hp = {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "teacher_top_k": 16}
    hp |= changes.pop("hyperparameters", {})  # type: ignore[arg-type]
    given = {
        "task": "causal_lm",
        "teacher": {"file_id": "file_teacher"},
        "student": changes.pop("student", STUDENT),
        "data": {"train_file_id": "file_train", "max_length": 48, "validation_split": 0.2}
        | changes.pop("data", {}),  # type: ignore[operator]
        "hyperparameters": hp,
    } | changes
    return JobSpec.model_validate(given)


def engine_job(
    tmp: Path, teacher: Path, train: Path, job_spec: JobSpec, cache: Path | None = None, **kw
) -> EngineJob:
    return EngineJob(
        spec=job_spec,
        teacher_path=teacher,
        teacher_format="hf_archive",
        train_path=train,
        train_format="jsonl",
        validation_path=None,
        validation_format=None,
        output_dir=tmp / "out",
        checkpoint_path=tmp / "checkpoint.pt",
        device="cpu",
        cache_dir=cache if cache is not None else tmp / "cache",
        **kw,
    )


def assert_same_student(
    job: EngineJob, resumed: EngineResult, whole_out: Path, whole: EngineResult
) -> None:
    """A job stopped and resumed ends as the uninterrupted one: the same weights, byte for
    byte, and the same perplexity."""
    weights = "student.safetensors"
    assert (job.output_dir / weights).read_bytes() == (whole_out / weights).read_bytes()
    assert resumed.metrics["student_perplexity"] == whole.metrics["student_perplexity"]


@pytest.fixture(scope="module")
def distilled(
    teacher_zip: Path, texts: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EngineResult, Recorder, Path]:
    tmp = tmp_path_factory.mktemp("distilled")
    recorder = Recorder()
    result = run_job(engine_job(tmp, teacher_zip, texts, spec(baseline=True)), recorder)
    return result, recorder, tmp


def test_a_job_reports_the_contracts_metrics(distilled) -> None:
    result, _, _ = distilled
    metrics = result.metrics
    for name in (
        "teacher_perplexity",
        "student_perplexity",
        "baseline_perplexity",
        "token_agreement",
        "kl_divergence",
        "teacher_tokens_per_second",
        "student_tokens_per_second",
        "speedup",
        "teacher_signal_bytes_per_token",
        "teacher_signal_kl",
    ):
        assert math.isfinite(metrics[name]) and metrics[name] > 0, name
    assert metrics["teacher_cache"] == "miss"
    assert metrics["student_params"] < metrics["teacher_params"]
    assert metrics["compression_ratio"] == metrics["teacher_params"] / metrics["student_params"]
    assert 0 < metrics["token_agreement"] <= 1
    # The teacher was trained on these snippets; a 2-of-4-layer cut of it, briefly distilled,
    # predicts them worse than it does but far better than chance (vocabulary 512).
    assert metrics["teacher_perplexity"] < metrics["student_perplexity"] < 512
    assert metrics["train_tokens"] > 0


def test_setup_counts_tied_weights_once(distilled) -> None:
    result, recorder, _ = distilled
    setup = next(m for m in recorder.messages("info") if "student of" in m)
    assert f"student of {result.metrics['student_params']:,} parameters" in setup
    assert not any("more parameters" in m for m in recorder.messages("warning"))


def test_the_student_loads_with_transformers_alone(distilled, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, _, _ = distilled
    names = {p.name for p in result.artifacts}
    assert {"student_hf.zip", "student.safetensors", "student.json", "metrics.json"} <= names
    assert "model_card.md" in names and "student.pt" not in names
    zip_path = next(p for p in result.artifacts if p.name == "student_hf.zip")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "student")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "student", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "student", local_files_only=True)
    assert model.config.num_hidden_layers == 2
    assert tokenizer.chat_template == lm_tokenizer().chat_template
    ids = tokenizer("a great film", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


def test_the_card_shows_the_generations(distilled) -> None:
    result, _, _ = distilled
    card = (result.artifacts[0].parent / "model_card.md").read_text()
    section = card.split("## Generations", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    header = rows[0].lower()
    assert "teacher" in header and "student" in header and "baseline" in header
    assert len(rows) - 1 == CARD_PROMPTS  # one row per validation prompt


def test_the_teacher_pass_says_how_many_tokens_it_read(distilled) -> None:
    result, recorder, _ = distilled
    [data] = [d for _, m, d in recorder.logs if m.startswith("Teacher signal written")]
    assert data is not None and data["teacher_cache"] == "miss"
    # Every training and validation target token, once (the job trained 2 epochs).
    train_tokens = result.metrics["train_tokens"] // 2
    assert data["teacher_pass_tokens"] == train_tokens + result.metrics["validation_tokens"]
    assert data["teacher_pass_seconds"] > 0


def test_a_second_job_reads_the_stored_signal_without_the_teacher_pass(
    distilled, teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    _, first, first_tmp = distilled
    recorder = Recorder()
    again = run_job(
        engine_job(tmp_path, teacher_zip, texts, spec(), cache=first_tmp / "cache"), recorder
    )
    assert again.metrics["teacher_cache"] == "hit"
    assert not any("Teacher pass" in m for m in recorder.messages("info"))
    assert any("Teacher pass" in m for m in first.messages("info"))
    assert sorted(recorder.cache_entries) == sorted(set(first.cache_entries))


def test_a_sampled_signal_trains_and_rebuilds_to_the_same_store(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    """``teacher_signal: sampled`` (the default with forward KL) stores ``teacher_draws`` draws
    per training token (the validation rows keep a top-k store, which only measures); the draws
    are reproducible, so a store rebuilt from scratch is the same bytes and trains the same
    student; a top-k store trains another."""
    job_spec = spec(hyperparameters={"epochs": 1, "teacher_draws": 24})
    results = [
        run_job(engine_job(tmp_path / run, teacher_zip, texts, job_spec)) for run in ("a", "b")
    ]
    metrics = results[0].metrics
    assert (metrics["teacher_signal"], metrics["teacher_cache"]) == ("sampled", "miss")
    assert metrics["teacher_signal_kl"] > 0 and math.isfinite(metrics["student_perplexity"])
    card = (tmp_path / "a" / "out" / "model_card.md").read_text()
    assert "24 draws from the teacher's distribution" in card
    assert metrics["teacher_draws"] == 24
    stores = {}
    for run in ("a", "b"):
        for manifest in (tmp_path / run / "cache" / "signals").glob("*/manifest.json"):
            stores.setdefault(run, {})[json.loads(manifest.read_text())["method"]] = manifest.parent
    assert sorted(stores["a"]) == ["sampled", "top_k"]
    for method in ("sampled", "top_k"):
        assert stores["a"][method].name == stores["b"][method].name  # the same key
        shards = sorted(stores["a"][method].glob("shard-*"))
        assert shards and all(
            shard.read_bytes() == (stores["b"][method] / shard.name).read_bytes()
            for shard in shards
        )
    weights = "student.safetensors"
    assert (tmp_path / "a" / "out" / weights).read_bytes() == (
        tmp_path / "b" / "out" / weights
    ).read_bytes()

    # A top-k job on the same cache: the validation store is shared, the training one is not,
    # and each job reports the accuracy of the store it trained on.
    top_k_spec = spec(hyperparameters={"epochs": 1, "teacher_signal": "top_k"})
    cache = tmp_path / "a" / "cache"
    top_k = run_job(engine_job(tmp_path / "c", teacher_zip, texts, top_k_spec, cache=cache))
    assert top_k.metrics["teacher_signal"] == "top_k"
    assert top_k.metrics["student_perplexity"] != metrics["student_perplexity"]
    kinds = {}
    for manifest in (cache / "signals").glob("*/manifest.json"):
        facts = json.loads(manifest.read_text())
        kinds.setdefault(facts["method"], []).append(facts["stats"])
    assert len(kinds["top_k"]) == 2  # the validation store, and now top-k training rows
    assert {"signal_kl", "teacher_nll"} <= kinds["top_k"][0].keys() | kinds["top_k"][1].keys()
    (sampled_stats,) = kinds["sampled"]
    assert metrics["teacher_signal_kl"] == sampled_stats["signal_kl"]
    validation_kl = next(st["signal_kl"] for st in kinds["top_k"] if "teacher_nll" in st)
    assert top_k.metrics["teacher_signal_kl"] == validation_kl != metrics["teacher_signal_kl"]


def test_the_baseline_trains_on_the_labels_alone(distilled) -> None:
    result, _, _ = distilled
    # Same start, same budget: the two runs differ, and both learned something.
    assert result.metrics["baseline_perplexity"] != result.metrics["student_perplexity"]
    assert result.metrics["baseline_perplexity"] < 512


@pytest.mark.parametrize("kind", ["reverse_kl", "jsd"])
def test_every_loss_trains(kind: str, teacher_zip: Path, texts: Path, tmp_path: Path) -> None:
    job_spec = spec(losses={"logits": kind}, hyperparameters={"epochs": 1})
    result = run_job(engine_job(tmp_path, teacher_zip, texts, job_spec))
    assert math.isfinite(result.metrics["student_perplexity"])


def test_an_online_teacher_gives_its_full_distribution(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    job_spec = spec(hyperparameters={"epochs": 1, "teacher_top_k": 0})
    result = run_job(engine_job(tmp_path, teacher_zip, texts, job_spec))
    assert result.metrics["teacher_cache"] == "off"
    assert "teacher_signal_kl" not in result.metrics
    assert not (tmp_path / "cache" / "signals").exists()


def test_a_cancelled_job_resumes_to_the_same_student(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    job_spec = spec(hyperparameters={"epochs": 2})
    whole = run_job(engine_job(tmp_path / "whole", teacher_zip, texts, job_spec))

    job = engine_job(tmp_path / "stopped", teacher_zip, texts, job_spec, progress_interval=0.0)
    with pytest.raises(JobCancelled):
        run_job(job, Recorder(stop_at_step=3))
    resumed = run_job(job)

    assert_same_student(job, resumed, tmp_path / "whole" / "out", whole)


def test_a_sweep_reads_one_signal(teacher_zip: Path, texts: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    job_spec = spec(hyperparameters={"epochs": 1}, sweep={"temperature": [1.0, 2.0]})
    result = run_job(engine_job(tmp_path, teacher_zip, texts, job_spec), recorder)
    assert len(result.metrics["sweep"]) == 2
    assert sum(row["chosen"] for row in result.metrics["sweep"]) == 1
    passes = [m for m in recorder.messages("info") if m.startswith("Teacher pass over the train")]
    # One pass, reported by the quarter, for every run of the sweep to read.
    done = [m.split(": ")[1].rstrip(".").split("/") for m in passes]
    assert [int(d) for d, _ in done] == sorted(int(d) for d, _ in done)
    assert sum(d == total for d, total in done) == 1


def test_a_sweep_over_the_loss_trains_each_run_with_its_loss(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    swept = spec(hyperparameters={"epochs": 1}, sweep={"logits": ["reverse_kl", "jsd"]})
    result = run_job(engine_job(tmp_path / "sweep", teacher_zip, texts, swept, cache))
    rows = result.metrics["sweep"]
    assert [row["logits"] for row in rows] == ["reverse_kl", "jsd"]
    chosen = result.metrics["chosen"]["logits"]
    assert chosen == next(r["logits"] for r in rows if r["chosen"])
    card = (tmp_path / "sweep" / "out" / "model_card.md").read_text()
    loss_line = next(line for line in card.splitlines() if line.startswith("The loss: "))
    other = next(r["logits"] for r in rows if not r["chosen"])
    assert LOSS_NAMES[chosen] in loss_line  # the chosen run's loss, not the spec's
    assert LOSS_NAMES[other] not in loss_line

    # The jsd run is the job that asks for jsd: same start, data order and signal.
    alone = spec(hyperparameters={"epochs": 1}, losses={"logits": "jsd"})
    single = run_job(engine_job(tmp_path / "jsd", teacher_zip, texts, alone, cache))
    assert single.metrics["teacher_cache"] == "hit"
    assert rows[1]["val_perplexity"] == pytest.approx(single.metrics["student_perplexity"])
    assert rows[0]["val_perplexity"] != pytest.approx(rows[1]["val_perplexity"])


def test_an_hf_config_student_starts_from_its_seed(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    result = run_job(
        engine_job(
            tmp_path, teacher_zip, texts, spec(student=NARROW, hyperparameters={"epochs": 1})
        )
    )
    config = json.loads((tmp_path / "out" / "student.json").read_text())["config"]
    assert config["hidden_size"] == 32 and config["vocab_size"] == len(lm_tokenizer())
    assert math.isfinite(result.metrics["student_perplexity"])


@pytest.mark.parametrize(
    "rows", [prompt_completion_rows, messages_rows], ids=["prompt_completion", "messages"]
)
def test_conversation_kinds_train_on_their_answers(rows, teacher_zip: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", rows(lm_corpus(80, seed=6)))
    result = run_job(
        engine_job(
            tmp_path,
            teacher_zip,
            data,
            spec(hyperparameters={"epochs": 1}, data={"max_length": 64}),
        )
    )
    assert math.isfinite(result.metrics["student_perplexity"])


def test_prompt_only_data_has_the_teacher_write_the_completions_once(
    teacher_zip: Path, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(lm_corpus(40, seed=7)))
    job_spec = spec(
        hyperparameters={"epochs": 1},
        data={"max_length": 128},
        generation={"max_new_tokens": 8},
    )
    first = Recorder()
    run_job(engine_job(tmp_path / "a", teacher_zip, data, job_spec, cache=tmp_path / "c"), first)
    second = Recorder()
    run_job(engine_job(tmp_path / "b", teacher_zip, data, job_spec, cache=tmp_path / "c"), second)
    assert any("writes the completions" in m for m in first.messages("info"))
    assert not any("writes the completions" in m for m in second.messages("info"))
    assert any("Reusing" in m for m in second.messages("info"))


def test_max_length_beyond_the_teachers_positions_is_refused(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    with pytest.raises(EngineError, match="positions") as failure:
        run_job(engine_job(tmp_path, teacher_zip, texts, spec(data={"max_length": 4096})))
    assert failure.value.code == "invalid_request"
    assert not (tmp_path / "out").exists()


def test_a_layer_the_teacher_lacks_is_refused(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    bad = {"arch": "from_teacher", "layers": [0, 9]}
    with pytest.raises(EngineError, match="layer 9") as failure:
        run_job(engine_job(tmp_path, teacher_zip, texts, spec(student=bad)))
    assert failure.value.code == "unsupported_arch"


def test_early_stopping_watches_validation_perplexity(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    job_spec = spec(
        hyperparameters={"epochs": 3, "early_stopping": {"patience": 1}, "learning_rate": 0.5}
    )
    assert job_spec.hyperparameters.early_stopping.metric == "val_perplexity"
    recorder = Recorder()
    result = run_job(engine_job(tmp_path, teacher_zip, texts, job_spec), recorder)
    ends = [d for level, _, d in recorder.logs if d and "val_perplexity" in d and "epoch" in d]
    best = min(range(len(ends)), key=lambda i: ends[i]["val_perplexity"])
    # The job ends on its best epoch by perplexity (lower is better), however far it went on.
    assert result.metrics["best_epoch"] == best + 1


def test_packing_is_refused_for_a_student_whose_attention_cannot_keep_documents_apart(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    student = {
        "arch": "hf",
        "config": {
            "model_type": "mistral",
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
            "sliding_window": 16,
        },
    }
    job_spec = spec(student=student, data={"packing": True})
    with pytest.raises(EngineError, match="sliding window") as failure:
        run_job(engine_job(tmp_path, teacher_zip, texts, job_spec))
    assert failure.value.code == "packing_unsupported"
    assert not (tmp_path / "cache" / "signals").exists()  # refused before the teacher pass


# --- layer matching (losses.hidden) ------------------------------------------------------------


@pytest.fixture(scope="module")
def matched(
    teacher_zip: Path, texts: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EngineResult, Recorder, Path]:
    """The ``distilled`` job with hidden-state matching on the default pairs."""
    tmp = tmp_path_factory.mktemp("matched")
    recorder = Recorder()
    job_spec = spec(baseline=True, losses={"hidden": {}})
    result = run_job(engine_job(tmp, teacher_zip, texts, job_spec), recorder)
    return result, recorder, tmp


def test_a_cut_student_matches_the_layers_it_was_copied_from(matched) -> None:
    result, recorder, tmp = matched
    assert result.metrics["layer_pairs"] == {"hidden": [[0, 0], [1, 3]]}  # STUDENT's layers
    assert math.isfinite(result.metrics["student_perplexity"])
    [line] = [m for m in recorder.messages("info") if m.startswith("Layer matching")]
    assert "student layer 1 (B, 8, 64) -> teacher layer 3 (B, 8, 64)" in line
    assert "projection" not in line  # one width
    hidden = [p["hidden_loss"] for p in recorder.points if p["hidden_loss"] is not None]
    assert hidden and all(math.isfinite(h) and h >= 0 for h in hidden)
    card = (tmp / "out" / "model_card.md").read_text()
    assert "student layer → teacher layer: 0 → 0, 1 → 3" in card


def test_the_baseline_matches_no_layers(matched, distilled) -> None:
    with_layers, without = matched[0].metrics, distilled[0].metrics
    # Same start, data and budget on the target tokens alone: the very same baseline.
    assert with_layers["baseline_perplexity"] == without["baseline_perplexity"]
    assert with_layers["student_perplexity"] != without["student_perplexity"]
    assert "layer_pairs" not in without


def _layer_distance(out: Path, layer: int) -> float:
    """The mean squared distance between the student's and the teacher's outputs of ``layer``
    (an inner one: transformers' ``hidden_states[layer + 1]``) on texts neither trained on."""
    import torch
    from transformers import AutoModelForCausalLM

    with zipfile.ZipFile(out / "student_hf.zip") as zf:
        zf.extractall(out / "student")
    student = AutoModelForCausalLM.from_pretrained(out / "student", local_files_only=True)
    teacher, tokenizer = trained_lm_teacher(), lm_tokenizer()
    distances = []
    with torch.no_grad():
        for text in lm_corpus(40, seed=9):
            ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :48]
            a, b = (
                model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
                for model in (student.eval(), teacher)
            )
            distances.append(float((a - b).pow(2).mean()))
    return sum(distances) / len(distances)


def test_matching_brings_the_students_layer_to_the_teachers(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    # Student layer 0 starts as teacher layer 1; paired with teacher layer 0, it moves to it.
    student = {"arch": "from_teacher", "layers": [1, 3]}
    hidden = {"hidden": {"layers": [[0, 0], [1, 3]]}}
    distances = {}
    for name, losses in (("without", {}), ("with", hidden)):
        job_spec = spec(student=student, losses=losses)
        run_job(engine_job(tmp_path / name, teacher_zip, texts, job_spec, tmp_path / "cache"))
        distances[name] = _layer_distance(tmp_path / name / "out", 0)
    assert distances["with"] < 0.5 * distances["without"], distances


def test_a_narrower_student_matches_through_projections_and_resumes_to_the_same_student(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    import torch

    job_spec = spec(student=NARROW, losses={"hidden": {"metric": "cosine"}})
    recorder = Recorder()
    whole = run_job(engine_job(tmp_path / "whole", teacher_zip, texts, job_spec), recorder)
    assert whole.metrics["layer_pairs"] == {"hidden": [[0, 1], [1, 3]]}  # spread over 4 layers
    [line] = [m for m in recorder.messages("info") if m.startswith("Layer matching")]
    assert line.count("through a learned projection 32 -> 64") == 2

    job = engine_job(tmp_path / "stopped", teacher_zip, texts, job_spec, progress_interval=0.0)
    with pytest.raises(JobCancelled):
        run_job(job, Recorder(stop_at_step=3))
    saved = torch.load(job.checkpoint_path, map_location="cpu", weights_only=True)["matching"]
    assert saved["projections.0.weight"].shape == (64, 32)
    resumed = run_job(job)

    assert_same_student(job, resumed, tmp_path / "whole" / "out", whole)


def test_matching_with_the_teacher_online(teacher_zip: Path, texts: Path, tmp_path: Path) -> None:
    job_spec = spec(losses={"hidden": {}}, hyperparameters={"epochs": 1, "teacher_top_k": 0})
    result = run_job(engine_job(tmp_path, teacher_zip, texts, job_spec))
    assert result.metrics["teacher_cache"] == "off"
    assert result.metrics["layer_pairs"] == {"hidden": [[0, 0], [1, 3]]}
    assert math.isfinite(result.metrics["student_perplexity"])


def test_a_pair_past_the_students_layers_fails_before_the_teacher_pass(
    teacher_zip: Path, texts: Path, tmp_path: Path
) -> None:
    job_spec = spec(losses={"hidden": {"layers": [[0, 0], [2, 3]]}})
    with pytest.raises(EngineError, match="student layer 2, but the student has 2") as failure:
        run_job(engine_job(tmp_path, teacher_zip, texts, job_spec))
    assert failure.value.code == "shape_mismatch"
    assert not (tmp_path / "cache" / "signals").exists()


def test_the_memory_preflight_counts_the_teacher_kept_for_matching(
    teacher_zip: Path, texts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.engine.errors import OutOfMemory
    from worker.engine.lm import preflight

    estimates = []

    def refuse(estimate: int, device: object) -> None:
        estimates.append(estimate)
        raise OutOfMemory("refused here, to read the estimate")

    monkeypatch.setattr(preflight, "check_fits", refuse)
    for name, losses in (("without", {}), ("with", {"hidden": {}})):
        with pytest.raises(OutOfMemory):
            run_job(engine_job(tmp_path / name, teacher_zip, texts, spec(losses=losses)))
    teacher_bytes = 4 * sum(p.numel() for p in trained_lm_teacher().parameters())
    assert estimates[1] - estimates[0] > teacher_bytes
