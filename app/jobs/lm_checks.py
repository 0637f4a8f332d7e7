"""The checks of a language-model job (``task`` causal_lm) against its files' recorded facts,
before the job exists: the teacher is a causal LM with a tokenizer; the data is jsonl of the
language-model kinds; ``data.max_length`` fits the models' positions; the student can start from
what it names, over the teacher's tokens. Torch-free: the worker checks the loaded models again.

Decisions (docs/api.md, "Language models"):
- Labelled ``{"text", "label"}`` lines are a text classifier's data and refused here, so a label is
  never silently ignored; unlabelled ``{"text"}`` lines suit both kinds of job.
- A validation file of another kind than the training file is fine when both hold targets (text,
  prompt_completion, messages); ``{"prompt"}``-only data goes with its own kind only.
- A pretrained student is a file uploaded with purpose ``teacher`` (the model purpose); a file
  that is not a causal LM with a tokenizer is ``unsupported_student``.
"""

from app.errors import Unprocessable
from app.files.formats.causal_lm import is_causal_lm
from app.files.vocabulary import stored_tokens
from app.models import File
from file_rules.vocabulary import vocabulary_difference
from jobspec import FromTeacherArch, Generation, HfArch, JobSpec
from jobspec import warnings as job_warnings
from jobspec.requirements import (
    SpecConflict,
    check_early_stopping_metric,
    check_layer_pairs,
    check_student_layers,
)

WITH_TARGETS = frozenset({"text", "prompt_completion", "messages"})
# model_types that transformers builds as encoders only: no causal-LM head to train.
ENCODERS = frozenset(
    {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta"}
)
_DATA_KINDS = (
    '{"text"}, {"prompt", "completion"}, {"messages": [{"role", "content"}, ...]} or '
    '{"prompt"} alone'
)
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")
_DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers")  # as upload detection reads them


def check_language_model(
    spec: JobSpec, teacher: File, datasets: list[tuple[File, str]], student: File | None
) -> tuple[JobSpec, list[job_warnings.JobWarning]]:
    """The spec as it will run (``generation`` defaulted for ``{"prompt"}``-only data) and the
    warnings the facts foresee; an ``Unprocessable`` for the first thing wrong. ``student``: the
    file of a pretrained student, None for the other kinds."""
    _check_teacher(teacher)
    kind = _check_data(teacher, datasets)
    spec = _with_generation(spec, kind)
    _check_positions(spec, teacher.meta.get("max_positions"), "teacher")
    _check_student(spec, teacher, student)
    _check_training(spec, teacher, student)
    train = datasets[0][0]
    student_meta = student.meta if student is not None else None
    return spec, job_warnings.before_training(spec, teacher.meta, train.meta, student_meta)


def _check_teacher(teacher: File) -> None:
    if teacher.meta.get("task") != "causal_lm":
        raise Unprocessable(
            f"File {teacher.id} is a {teacher.meta.get('task', 'classification')} teacher "
            f"({teacher.format}), not a causal language model; a causal_lm job distils an "
            'hf_archive of a *ForCausalLM model or a gguf file. Drop "task" to distil this '
            "teacher as it is.",
            param="teacher.file_id",
            code="unsupported_teacher",
        )
    if not teacher.meta.get("has_tokenizer"):
        raise Unprocessable(
            f"File {teacher.id} has no tokenizer; a language-model teacher reads the data with "
            "its own: save it with the model (tokenizer.save_pretrained, or a GGUF file with "
            "its tokenizer).",
            param="teacher.file_id",
            code="unsupported_teacher",
        )


def _check_data(teacher: File, datasets: list[tuple[File, str]]) -> str:
    """The training data's kind, once every file is language-model data the teacher can read."""
    for data, param in datasets:
        kind = data.meta.get("lm_kind") if data.format == "jsonl" else None
        if kind is None:
            raise Unprocessable(
                f"File {data.id} is {data.format}; a language model learns from jsonl, one "
                f"object per line: {_DATA_KINDS}.",
                param=param,
                code="unsupported_data",
            )
        if data.meta.get("has_labels"):
            raise Unprocessable(
                f'File {data.id} holds labelled {{"text", "label"}} lines, a text classifier\'s '
                "data; a language model learns the text itself. Drop the labels, or distil a "
                "classifier teacher.",
                param=param,
                code="unsupported_data",
            )
        if kind == "messages" and not teacher.meta.get("has_chat_template"):
            raise Unprocessable(
                f'File {data.id} holds {{"messages"}} conversations, but the teacher\'s '
                "tokenizer has no chat template to render them with; use a teacher whose "
                'tokenizer has one, or give the data as {"prompt", "completion"} or {"text"}.',
                param=param,
                code="no_chat_template",
            )
    kinds = [data.meta["lm_kind"] for data, _ in datasets]
    if len(set(kinds)) > 1 and not set(kinds) <= WITH_TARGETS:
        raise Unprocessable(
            f"The training file holds {kinds[0]} records and the validation file {kinds[1]}: "
            "files of different kinds go together only when both hold targets (text, "
            'prompt_completion or messages). {"prompt"}-only data goes with its own kind, the '
            "teacher writing the completions of both.",
            param="data.validation_file_id",
            code="unsupported_data",
        )
    return kinds[0]


def _with_generation(spec: JobSpec, kind: str) -> JobSpec:
    if kind == "prompt":
        if spec.generation is not None:
            return spec
        return spec.model_copy(update={"generation": Generation()})
    if spec.generation is not None:
        raise Unprocessable(
            f'generation is for {{"prompt"}}-only data, whose completions the teacher writes; '
            f"this job's data holds {kind} records with their own targets. Drop generation.",
            param="generation",
            code="invalid_request",
        )
    return spec


def _check_positions(spec: JobSpec, positions: object, who: str) -> None:
    max_length = spec.data.max_length
    if isinstance(positions, int) and not isinstance(positions, bool) and max_length > positions:
        raise Unprocessable(
            f"data.max_length is {max_length} tokens, but the {who} reads at most {positions} "
            f"positions; set data.max_length to {positions} or less.",
            param="data.max_length",
            code="invalid_request",
        )


def _check_student(spec: JobSpec, teacher: File, student: File | None) -> None:
    arch = spec.student
    try:
        if isinstance(arch, FromTeacherArch) and isinstance(teacher.meta.get("num_layers"), int):
            check_student_layers(arch.layers, teacher.meta["num_layers"])
        elif isinstance(arch, HfArch):
            _check_hf_student(spec, arch.config, teacher)
    except SpecConflict as conflict:
        raise Unprocessable(conflict.message, param=conflict.param, code=conflict.code) from None
    if student is not None:
        _check_pretrained_student(spec, teacher, student)


def _check_hf_student(spec: JobSpec, config: dict, teacher: File) -> None:
    """Loosely, without transformers: the worker builds the model and checks the rest."""
    model_type = config["model_type"]
    if model_type in ENCODERS or ("architectures" in config and not is_causal_lm(config)):
        raise SpecConflict(
            f"student.config describes a {model_type} model without a causal-LM head; give "
            'a causal-LM config, e.g. {"model_type": "llama", ...} with architectures '
            '["LlamaForCausalLM"] or none.',
            param="student.config",
            code="unsupported_arch",
        )
    vocab_size, teacher_vocab = config.get("vocab_size"), teacher.meta.get("vocab_size")
    if vocab_size is not None and isinstance(teacher_vocab, int) and vocab_size != teacher_vocab:
        raise SpecConflict(
            f"student.config.vocab_size is {vocab_size}, but the teacher's vocabulary is "
            f"{teacher_vocab}; an hf student reads the teacher's tokens: drop vocab_size (it is "
            "the teacher's) or set it to the teacher's.",
            param="student.config.vocab_size",
            code="vocabulary_mismatch",
        )
    positions = next((config[k] for k in _POSITION_KEYS if isinstance(config.get(k), int)), None)
    _check_positions(spec, positions, "student (student.config)")


def _check_pretrained_student(spec: JobSpec, teacher: File, student: File) -> None:
    if student.meta.get("task") != "causal_lm" or not student.meta.get("has_tokenizer"):
        what = "has no tokenizer" if student.meta.get("task") == "causal_lm" else "is not"
        raise Unprocessable(
            f"File {student.id} ({student.format}) {what} a causal language model with its "
            "tokenizer; a pretrained student is an hf_archive of a *ForCausalLM model or a "
            "gguf file, of the teacher's family.",
            param="student.file_id",
            code="unsupported_student",
        )
    _check_positions(spec, student.meta.get("max_positions"), "student")
    teacher_tokens, student_tokens = stored_tokens(teacher), stored_tokens(student)
    if teacher_tokens is None or student_tokens is None:
        return  # not readable here: the worker compares the loaded tokenizers
    difference = vocabulary_difference(teacher_tokens, student_tokens)
    if difference is not None:
        raise Unprocessable(difference.message, param="student.file_id", code="vocabulary_mismatch")


def _check_training(spec: JobSpec, teacher: File, student: File | None) -> None:
    top_k, vocab = spec.hyperparameters.teacher_top_k, teacher.meta.get("vocab_size")
    if top_k is not None and isinstance(vocab, int) and top_k > vocab:
        raise Unprocessable(
            f"hyperparameters.teacher_top_k is {top_k}, more than the teacher's {vocab} "
            "tokens; use at most that, or 0 for the whole distribution.",
            param="hyperparameters.teacher_top_k",
            code="invalid_request",
        )
    try:
        check_early_stopping_metric(spec)
        if spec.losses.hidden is not None and spec.losses.hidden.layers is not None:
            depths = _student_depth(spec, student), _int(teacher.meta.get("num_layers"))
            check_layer_pairs(spec.losses.hidden.layers, *depths)
    except SpecConflict as conflict:
        raise Unprocessable(conflict.message, param=conflict.param, code=conflict.code) from None


def _student_depth(spec: JobSpec, student: File | None) -> int | None:
    """The student's number of layers where the spec or its file says it (None: the worker
    checks the model it builds)."""
    arch = spec.student
    if isinstance(arch, FromTeacherArch):
        return len(arch.layers)
    if isinstance(arch, HfArch):
        return next((d for k in _DEPTH_KEYS if (d := _int(arch.config.get(k))) is not None), None)
    return _int(student.meta.get("num_layers")) if student is not None else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
