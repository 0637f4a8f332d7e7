"""What a finished language-model job leaves: the student (``student_hf.zip``,
``student.safetensors``, ``student.json``), its metrics next to the teacher's and the baseline's
on the validation tokens (also ``metrics.json``), and the model card with side-by-side
generations. The teacher is loaded once more here, after training, for its speed and its
generations."""

from typing import TYPE_CHECKING, Any

from worker.engine.artifacts import write_metrics
from worker.engine.job import EngineResult
from worker.engine.lm.card import Generations, LMCardFacts, write_lm_model_card
from worker.engine.lm.export import write_lm_student
from worker.engine.lm.measure import generate_text, perplexity, tokens_per_second
from worker.engine.sweep import chosen_values

if TYPE_CHECKING:
    from worker.engine.lm.recipe import LanguageModelRecipe

CARD_PROMPTS = 3  # validation prompts shown side by side in the card
CARD_TOKENS = 32  # new tokens per generation (and per speed measurement)


def write_lm_results(recipe: "LanguageModelRecipe") -> EngineResult:
    out = recipe.job.output_dir
    student = recipe.runs["student"].model.eval()
    artifacts = write_lm_student(
        out,
        student,
        recipe.tokenizer,
        recipe.plan.arch,
        generation_config=_generation_config(recipe),
    )
    metrics = _metrics(recipe)
    prompts = _prompts(recipe)
    teacher = recipe.load_teacher().model.to(recipe.device).eval()
    speeds = {
        "teacher_tokens_per_second": tokens_per_second(
            teacher, recipe.tokenizer, prompts, CARD_TOKENS, device=recipe.device
        ),
        "student_tokens_per_second": tokens_per_second(
            student, recipe.tokenizer, prompts, CARD_TOKENS, device=recipe.device
        ),
    }
    speeds["speedup"] = speeds["student_tokens_per_second"] / speeds["teacher_tokens_per_second"]
    metrics |= speeds
    generations = _generations(recipe, teacher, student, prompts)
    recipe.let_go_of_teacher()
    artifacts.append(write_metrics(out, metrics))
    facts = LMCardFacts(
        job_id=recipe.job.job_id,
        file_names=recipe.job.file_names,
        spec=recipe.spec,
        metrics=metrics,
        history=recipe.history,
        generations=generations,
        warnings=[],
    )
    artifacts += write_lm_model_card(out, facts)
    recipe.log("Distillation finished.", metrics)
    return EngineResult(metrics, artifacts)


def _metrics(recipe: "LanguageModelRecipe") -> dict[str, Any]:
    runs, stats = recipe.runs, recipe.teacher_stats
    student_run = runs["student"]
    scores = recipe.scores(student_run.model, 1.0, 1.0)
    val = scores.metrics()
    student_params = sum(p.numel() for p in student_run.model.parameters())
    metrics: dict[str, Any] = {
        "teacher_perplexity": perplexity(float(stats["teacher_nll"]), int(stats["tokens"])),
        "student_perplexity": val["val_perplexity"],
        "token_agreement": val["val_token_agreement"],
        "kl_divergence": val["val_kl"],
        "teacher_params": recipe.teacher_params,
        "student_params": student_params,
        "compression_ratio": recipe.teacher_params / student_params,
        "train_seconds": student_run.train_seconds(),
        "train_tokens": recipe.train_rows.target_tokens * student_run.epoch,
        "validation_tokens": recipe.val_rows.target_tokens,
        "device": str(recipe.device),
        "world_size": recipe.job.world_size,  # 1: language models train on one device (so far)
        "teacher_cache": recipe.teacher_status,
        "teacher_top_k": recipe.top_k,
        "teacher_signal": recipe.signal_method if recipe.top_k > 0 else "dense",
    }
    if recipe.top_k > 0 and recipe.signal_method == "sampled":
        metrics["teacher_draws"] = recipe.draws
    matching = student_run.matching
    if matching is not None:
        metrics["layer_pairs"] = {
            k: [list(p) for p in pairs] for k, pairs in matching.pairs.items()
        }
    if recipe.top_k > 0:
        signal = recipe.signals["train"]
        metrics["teacher_signal_bytes_per_token"] = signal.bytes_per_token
        metrics["teacher_signal_kl"] = float(stats["signal_kl"])
    if "baseline" in runs:
        baseline = recipe.scores(runs["baseline"].model, 1.0, 1.0).metrics()
        metrics["baseline_perplexity"] = baseline["val_perplexity"]
        metrics["baseline_token_agreement"] = baseline["val_token_agreement"]
        metrics["baseline_train_seconds"] = runs["baseline"].train_seconds()
    if recipe.sweep_state is not None:
        table = recipe.sweep_state.table()
        chosen = table[recipe.sweep_state.best or 0]
        metrics["sweep"] = table
        metrics["chosen"] = chosen_values(chosen)
        metrics["sweep_metric"] = "val_perplexity"
    for phase, run in runs.items():
        if run.stopper is not None:
            prefix = "" if phase == "student" else "baseline_"
            metrics[f"{prefix}stopped_early"] = run.stopper.stopped_early
            metrics[f"{prefix}best_epoch"] = run.stopper.best_epoch
    return metrics


def _prompts(recipe: "LanguageModelRecipe") -> list[str]:
    """A few validation prompts: the examples' own, or a text's first third."""
    prompts = []
    for example in recipe.val_examples[:CARD_PROMPTS]:
        if example.prompt is not None:
            prompts.append(example.prompt)
        else:
            head = example.input_ids[: max(1, min(32, len(example.input_ids) // 3))]
            prompts.append(recipe.tokenizer.decode(head, skip_special_tokens=True))
    return prompts


def _generations(
    recipe: "LanguageModelRecipe", teacher: Any, student: Any, prompts: list[str]
) -> list[Generations]:
    baseline = recipe.runs["baseline"].model.eval() if "baseline" in recipe.runs else None
    rows = []
    for example, prompt in zip(recipe.val_examples, prompts, strict=False):

        def write(model: Any, prompt: str = prompt) -> str:
            return generate_text(model, recipe.tokenizer, prompt, CARD_TOKENS, device=recipe.device)

        rows.append(
            Generations(
                prompt=prompt,
                reference=example.reference,
                teacher=write(teacher),
                student=write(student),
                baseline=None if baseline is None else write(baseline),
            )
        )
    return rows


def _generation_config(recipe: "LanguageModelRecipe") -> Any:
    """The teacher's generation config (its stop tokens, sampling defaults), if it has one."""
    from transformers import GenerationConfig

    if not (recipe.teacher_dir / "generation_config.json").exists():
        return None
    return GenerationConfig.from_pretrained(recipe.teacher_dir, local_files_only=True)
