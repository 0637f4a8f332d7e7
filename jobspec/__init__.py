"""The job spec: what a user submits, validated and defaulted; the job echoes it in ``spec``.

The one home of every field's default and range. The API validates submissions with it, the engine
takes it typed, and tests and benchmarks build their specs through it. Pydantic only: the API, the
engine and the client may all import it (no torch, no app, no worker).
"""

import itertools
import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    HttpUrl,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from file_rules.remote_code import remote_code_keys
from jobspec.strict import Bool, Float, Int

PositiveSize = Annotated[Int, Field(ge=1, le=65536)]
LearningRate = Annotated[Float, Field(gt=0.0, le=10.0)]
Temperature = Annotated[Float, Field(gt=0.0, le=100.0)]
Alpha = Annotated[Float, Field(ge=0.0, le=1.0)]
MAX_SWEEP_RUNS = 16
# The most devices one job may ask for: one host's (a GPU host has at most a few dozen GPUs).
MAX_DEVICES = 64


# A sampled teacher signal's draws per target token: 128 kept a 6-layer student within 1% of the
# dense-teacher student at 147 bytes a token (docs/quality.md, "--table signal").
DEFAULT_TEACHER_DRAWS = 128


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MlpArch(_Strict):
    arch: Literal["mlp"] = "mlp"
    hidden_sizes: list[PositiveSize] = Field(default_factory=lambda: [128], max_length=16)
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: Float = Field(default=0.0, ge=0.0, lt=1.0)


class CnnArch(_Strict):
    """A convolutional net for images (N, C, H, W) or signals (N, C, L) / (N, L): 2-D convolutions
    for images, 1-D for signals; (N, L) data is one channel."""

    arch: Literal["cnn"]
    channels: list[Annotated[Int, Field(ge=1, le=2048)]] = Field(
        default_factory=lambda: [16, 32], min_length=1, max_length=8
    )
    kernel_size: Int = Field(default=3, ge=1, le=15)
    hidden_sizes: list[PositiveSize] = Field(default_factory=lambda: [64], max_length=16)
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: Float = Field(default=0.0, ge=0.0, lt=1.0)


class TransformerArch(_Strict):
    """A small encoder classifier. On tensor data the data's positions are its tokens; on text it
    is a BERT of these sizes, over the teacher's tokenizer."""

    arch: Literal["transformer"]
    num_layers: Int = Field(default=2, ge=1, le=48)
    hidden_size: Int = Field(default=64, ge=8, le=4096)
    num_heads: Int = Field(default=2, ge=1, le=64)
    intermediate_size: Int | None = Field(default=None, ge=8, le=16384)  # None: 4 x hidden_size
    dropout: Float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "TransformerArch":
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_heads "
                f"({self.num_heads})"
            )
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        return self


class HfArch(_Strict):
    """Any transformers config for text, e.g. a BERT with fewer and narrower layers; the vocabulary
    and label count come from the teacher."""

    arch: Literal["hf"]
    config: dict[str, Any]

    @field_validator("config")
    @classmethod
    def _a_plain_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(config.get("model_type"), str):
            raise ValueError('config needs a "model_type", e.g. "bert"')
        if remote := remote_code_keys(config):
            raise ValueError(
                f"config has {remote}: that would run code from the model's files, which "
                "Distillery never does"
            )
        if len(json.dumps(config)) > 64 * 1024:
            raise ValueError("config is larger than 64 KiB")
        return config


class FromTeacherArch(_Strict):
    """The teacher's own architecture with only ``layers`` kept (teacher layer indices, in
    order), each student layer starting from that teacher layer's weights."""

    arch: Literal["from_teacher"]
    layers: list[Annotated[Int, Field(ge=0, le=1023)]] = Field(min_length=1, max_length=128)

    @field_validator("layers")
    @classmethod
    def _increasing(cls, layers: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(layers)):
            raise ValueError("layers must be strictly increasing teacher layer indices")
        return layers


class PretrainedArch(_Strict):
    """A language model's starting point: a smaller pretrained causal LM uploaded as an
    ``hf_archive`` or ``gguf`` file, of the teacher's family (its vocabulary must match the
    teacher's as tokens). Written ``{"file_id": "file_..."}``; the echo adds the arch."""

    arch: Literal["pretrained"] = "pretrained"
    file_id: str = Field(min_length=1, max_length=40)


def _arch_tag(value: Any) -> str:
    # An arch spec without "arch" is an MLP, as the defaults promise, or a pretrained file.
    if isinstance(value, dict):
        default = "pretrained" if "file_id" in value else "mlp"
        return str(value.get("arch", default))
    return str(getattr(value, "arch", "mlp"))


TensorArch = Annotated[
    Annotated[MlpArch, Tag("mlp")]
    | Annotated[CnnArch, Tag("cnn")]
    | Annotated[TransformerArch, Tag("transformer")],
    Discriminator(_arch_tag),
]
Arch = Annotated[
    Annotated[MlpArch, Tag("mlp")]
    | Annotated[CnnArch, Tag("cnn")]
    | Annotated[TransformerArch, Tag("transformer")]
    | Annotated[HfArch, Tag("hf")]
    | Annotated[FromTeacherArch, Tag("from_teacher")]
    | Annotated[PretrainedArch, Tag("pretrained")],
    Discriminator(_arch_tag),
]
LM_STUDENTS = ("from_teacher", "hf", "pretrained")


class TeacherSpec(_Strict):
    file_id: str = Field(min_length=1, max_length=40)
    arch: TensorArch | None = None  # for state_dict / safetensors teachers


class DataSpec(_Strict):
    train_file_id: str = Field(min_length=1, max_length=40)
    validation_file_id: str | None = Field(default=None, max_length=40)
    validation_split: Float = Field(default=0.1, ge=0.0, le=0.5)
    max_length: Int = Field(default=128, ge=2, le=8192)  # text: tokens kept per example
    # causal_lm: short sequences share a row of max_length, attention never crossing documents.
    packing: Bool = False

    @model_validator(mode="after")
    def _has_validation(self) -> "DataSpec":
        if self.validation_file_id is None and self.validation_split <= 0:
            raise ValueError("validation_split must be above 0 when no validation_file_id is given")
        return self


class EarlyStopping(_Strict):
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` epochs;
    the job returns the best epoch's student."""

    metric: Literal["val_accuracy", "val_loss", "val_perplexity"] = "val_accuracy"
    patience: Int = Field(default=3, ge=1, le=1000)
    min_delta: Float = Field(default=0.0, ge=0.0, le=1e6)


class Hyperparameters(_Strict):
    epochs: Int = Field(default=10, ge=1, le=1000)
    batch_size: Int = Field(default=64, ge=1, le=65536)
    learning_rate: LearningRate = 0.001
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: Float = Field(default=0.0, ge=0.0, le=1.0)
    temperature: Temperature = 4.0
    alpha: Alpha = 0.5
    seed: Int = Field(default=0, ge=0, le=2**32 - 1)
    # Everything below is off by default: a spec without it trains exactly as before.
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: Int = Field(default=0, ge=0, le=10_000_000)
    temperature_schedule: Literal["constant", "linear"] = "constant"
    temperature_end: Float | None = Field(default=None, gt=0.0, le=100.0)
    alpha_schedule: Literal["constant", "linear"] = "constant"
    alpha_end: Float | None = Field(default=None, ge=0.0, le=1.0)
    grad_clip_norm: Float | None = Field(default=None, gt=0.0, le=1e6)
    grad_accumulation_steps: Int = Field(default=1, ge=1, le=1024)
    early_stopping: EarlyStopping | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # causal_lm: the teacher's top-k log-probabilities per target token, stored once and read by
    # every run (default 64); 0 keeps the teacher online with its whole distribution.
    teacher_top_k: Int | None = Field(default=None, ge=0, le=1024)
    # causal_lm: how the stored signal picks its tokens per target token: the teacher_top_k most
    # likely (top_k), or teacher_draws draws from the teacher's distribution with their counts
    # (sampled: unbiased; the default with forward_kl).
    teacher_signal: Literal["top_k", "sampled"] | None = None
    teacher_draws: Int | None = Field(default=None, ge=1, le=1024)

    @field_validator("temperature_end", "alpha_end")
    @classmethod
    def _end_needs_a_linear_schedule(cls, end: float | None, info: ValidationInfo) -> float | None:
        name = info.field_name or ""
        schedule = name.removesuffix("_end") + "_schedule"
        if end is not None and info.data.get(schedule) != "linear":
            raise ValueError(f"{name} needs {schedule} 'linear'")
        return end


LayerPair = tuple[Annotated[Int, Field(ge=0, le=1023)], Annotated[Int, Field(ge=0, le=1023)]]


class LayerLoss(_Strict):
    """A layer-matching term, added to the output loss with ``weight``. ``layers`` pairs
    [student layer, teacher layer]; null lets the engine spread the student's layers evenly over
    the teacher's (the last onto the last)."""

    weight: Float = Field(default=1.0, gt=0.0, le=1e4)
    layers: list[LayerPair] | None = Field(default=None, min_length=1, max_length=128)


class HiddenLoss(LayerLoss):
    """Hidden states: MSE or 1 - cosine, through a learned projection where widths differ."""

    metric: Literal["mse", "cosine"] = "mse"


LogitLoss = Literal["kl", "mse", "forward_kl", "reverse_kl", "jsd"]
CLASSIFIER_LOGIT_LOSSES = ("kl", "mse")
LM_LOGIT_LOSSES = ("forward_kl", "reverse_kl", "jsd")


class Losses(_Strict):
    """What the student learns from: ``alpha`` weighs the output term against the labels' CE
    (the target tokens' for a language model); the layer terms are added with their own weights.
    ``logits``: for classifiers kl (the soft targets at the temperature, the default) or mse on
    the raw logits; for causal_lm forward_kl (the default), reverse_kl, or jsd with ``beta``."""

    logits: LogitLoss = "kl"
    beta: Float | None = Field(default=None, ge=0.0, le=1.0)  # jsd only; default 0.5
    hidden: HiddenLoss | None = None
    attention: LayerLoss | None = None


class Generation(_Strict):
    """How the teacher writes the completions of ``{"prompt"}``-only data (sequence-level KD);
    temperature 0 is greedy."""

    max_new_tokens: Int = Field(default=128, ge=1, le=8192)
    temperature: Float = Field(default=0.0, ge=0.0, le=100.0)
    top_p: Float = Field(default=1.0, gt=0.0, le=1.0)
    seed: Int = Field(default=0, ge=0, le=2**32 - 1)


class Sweep(_Strict):
    """Values to try, each list replacing its hyperparameter; the job trains every combination
    and keeps the best student on validation."""

    temperature: list[Temperature] | None = Field(default=None, min_length=1, max_length=16)
    alpha: list[Alpha] | None = Field(default=None, min_length=1, max_length=16)
    learning_rate: list[LearningRate] | None = Field(default=None, min_length=1, max_length=16)
    # causal_lm only: the logit loss of each run (replacing losses.logits), over one stored signal.
    logits: list[LogitLoss] | None = Field(default=None, min_length=1, max_length=5)

    @model_validator(mode="after")
    def _a_small_grid(self) -> "Sweep":
        lists = (self.temperature, self.alpha, self.learning_rate, self.logits)
        sizes = [len(v) for v in lists if v]
        if not sizes:
            raise ValueError(
                "sweep needs at least one of temperature, alpha, learning_rate, logits"
            )
        if math.prod(sizes) > MAX_SWEEP_RUNS:
            raise ValueError(
                f"sweep has {math.prod(sizes)} combinations; at most {MAX_SWEEP_RUNS} are allowed"
            )
        return self


class Resources(_Strict):
    """What a job takes from one worker host: ``devices`` GPUs on a GPU host, or process slots
    of a CPU worker (``distill worker --processes N``), all handed to it at once."""

    devices: Int = Field(default=1, ge=1, le=MAX_DEVICES)


class Distributed(_Strict):
    """How a job of several devices spreads its training over them (torch.distributed):
    ``ddp`` replicates the student on each device, ``fsdp`` shards its parameters, gradients and
    optimizer state (and an online teacher's parameters) across them."""

    strategy: Literal["ddp", "fsdp"] = "ddp"


class JobSpec(_Strict):
    name: str | None = Field(default=None, max_length=200)
    # classification: the teacher gives class logits; regression: K real outputs (MSE losses);
    # causal_lm: a language model (inferred from a causal-LM teacher when absent: with_task).
    task: Literal["classification", "regression", "causal_lm"] = "classification"
    teacher: TeacherSpec
    student: Arch = Field(default_factory=MlpArch)
    data: DataSpec
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    losses: Losses = Field(default_factory=Losses)
    baseline: Bool = False
    sweep: Sweep | None = None
    priority: Int = Field(default=0, ge=-1000, le=1000)
    # Extra formats of the student, beside student.pt and the safetensors weights.
    export: list[Literal["onnx"]] = Field(default_factory=list, max_length=1)
    # Told of the final status by a signed POST (docs/operations.md, "Webhooks"); the API checks
    # the receiver against its operator's rules (app/jobs/spec.py).
    webhook_url: HttpUrl | None = None
    # causal_lm with {"prompt"}-only data: how the teacher writes the completions.
    generation: Generation | None = None
    resources: Resources = Field(default_factory=Resources)
    distributed: Distributed = Field(default_factory=Distributed)

    @model_validator(mode="after")
    def _task_defaults(self) -> "JobSpec":
        """The defaults that depend on the task, and the fields only one task takes."""
        if self.task == "causal_lm":
            _language_model_defaults(self)
        elif "task" in self.model_fields_set:
            # A spec that names no task is checked once the API has inferred it (with_task).
            _not_for_this_task(self)
        return self

    def with_task(self, task: str) -> "JobSpec":
        """This spec as written, for ``task``: the API infers ``causal_lm`` from the teacher when
        the spec names no task, and the task's own defaults apply to what the spec left out."""
        written = self.model_dump(mode="json", exclude_unset=True)
        return type(self).model_validate(written | {"task": task})


def _language_model_defaults(spec: JobSpec) -> None:
    losses, hp = spec.losses, spec.hyperparameters
    if "logits" not in losses.model_fields_set:
        losses.logits = "forward_kl"
    swept = (spec.sweep.logits or []) if spec.sweep is not None else []
    for where, kind in [("losses.logits", losses.logits)] + [
        (f"sweep.logits.{i}", kind) for i, kind in enumerate(swept)
    ]:
        if kind not in LM_LOGIT_LOSSES:
            raise ValueError(
                f"{where} {kind!r} is for classifiers; a causal_lm job takes "
                f"{', '.join(LM_LOGIT_LOSSES)}"
            )
    uses_jsd = "jsd" in [losses.logits, *swept]
    if uses_jsd and losses.beta is None:
        losses.beta = 0.5
    elif not uses_jsd and losses.beta is not None:
        raise ValueError("losses.beta is the jsd loss's; set losses.logits to 'jsd' or drop beta")
    if losses.attention is not None:
        raise ValueError("losses.attention is not served for causal_lm; use losses.hidden")
    if "temperature" not in hp.model_fields_set:
        hp.temperature = 1.0
    if hp.teacher_top_k is None:
        hp.teacher_top_k = 64
    # Draws serve forward KL alone (reverse KL and JSD need the teacher's probability of the
    # student's tokens): sampled by default, top-k where the job trains with another loss.
    others = sorted({kind for kind in [losses.logits, *swept] if kind != "forward_kl"})
    if hp.teacher_signal is None:
        hp.teacher_signal = "top_k" if others else "sampled"
    elif hp.teacher_signal == "sampled" and others and hp.teacher_top_k:
        raise ValueError(
            f"hyperparameters.teacher_signal 'sampled' serves forward_kl only, and this job "
            f"trains with {' and '.join(others)}, which needs the teacher's probability of "
            "tokens that were not drawn; use 'top_k' (the default for those losses)"
        )
    if hp.teacher_signal == "sampled" and hp.teacher_draws is None:
        hp.teacher_draws = DEFAULT_TEACHER_DRAWS
    elif hp.teacher_signal == "top_k" and hp.teacher_draws is not None:
        raise ValueError(
            "hyperparameters.teacher_draws is the sampled signal's; a top_k signal keeps "
            "teacher_top_k tokens"
        )
    if hp.early_stopping is not None and "metric" not in hp.early_stopping.model_fields_set:
        hp.early_stopping.metric = "val_perplexity"
    if "student" not in spec.model_fields_set or spec.student.arch not in LM_STUDENTS:
        raise ValueError(
            "student of a causal_lm job must be from_teacher (with layers), hf (a causal-LM "
            'config) or {"file_id": ...} (a pretrained model of the teacher\'s family)'
        )
    if spec.teacher.arch is not None:
        raise ValueError("teacher.arch is for state_dict and safetensors classifier teachers")
    if spec.export:
        raise ValueError("export (onnx) is not offered for causal_lm; student_hf.zip is the export")


def _not_for_this_task(spec: JobSpec) -> None:
    losses, hp = spec.losses, spec.hyperparameters
    task_only = {
        "losses.logits": losses.logits not in CLASSIFIER_LOGIT_LOSSES,
        "losses.beta": losses.beta is not None,
        "hyperparameters.teacher_top_k": hp.teacher_top_k is not None,
        "hyperparameters.teacher_signal": hp.teacher_signal is not None,
        "hyperparameters.teacher_draws": hp.teacher_draws is not None,
        "data.packing": spec.data.packing,
        "generation": spec.generation is not None,
        "hyperparameters.early_stopping.metric": hp.early_stopping is not None
        and hp.early_stopping.metric == "val_perplexity",
        "student.file_id": spec.student.arch == "pretrained",
        "sweep.logits": spec.sweep is not None and spec.sweep.logits is not None,
    }
    for field, used in task_only.items():
        if used:
            raise ValueError(f'{field} is for language models (task "causal_lm"), not {spec.task}')
