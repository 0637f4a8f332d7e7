"""Building the student: from its arch alone, or (``from_teacher``) from the teacher's own
architecture with fewer layers, each kept layer starting from the teacher's weights (DistilBERT).

A ``StudentPlan`` is decided once, at setup; ``build()`` then makes the same starting student for
the distillation, every sweep run and the baseline (random weights come from the caller's seed).
Its ``arch`` is what ``student.json`` records: a ``from_teacher`` student is recorded as the plain
arch it resolved to, so the artifact rebuilds without the teacher.
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn

from jobspec import Arch, FromTeacherArch, HfArch, TransformerArch
from worker.engine.errors import ShapeMismatch, UnsupportedInput
from worker.engine.features import check_layer_indices
from worker.engine.models import build_model
from worker.engine.teacher import Teacher

# Where each tensor arch keeps the layers from_teacher picks from, and what it calls them.
_LAYER_LISTS = {"mlp": "hidden_sizes", "cnn": "channels", "transformer": "num_layers"}


@dataclass
class StudentPlan:
    arch: dict  # resolved: mlp | cnn | transformer | hf (with its full config)
    input_shape: tuple[int, ...]
    num_outputs: int
    text: bool = False
    start: dict[str, torch.Tensor] | None = None  # from_teacher's starting weights
    note: str | None = None  # how the student was made, for the job's log

    def build(self) -> nn.Module:
        if self.arch["arch"] == "hf":
            from worker.engine import hf

            model: nn.Module = hf.rebuild_hf(self.arch["config"])
        else:
            model = build_model(self.arch, self.input_shape, self.num_outputs)
        if self.start is not None:
            model.load_state_dict(self.start)
        return model


# transformers applies dropout to the attention probabilities it returns; attention transfer
# needs true distributions, so its students train without that dropout.
_ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def plan_student(
    arch: Arch,
    teacher: Teacher,
    input_shape: tuple[int, ...],
    num_outputs: int,
    attention_loss: bool = False,
) -> StudentPlan:
    text = teacher.tokenizer is not None
    if isinstance(arch, FromTeacherArch):
        plan = _from_teacher(arch.layers, teacher, input_shape, num_outputs)
    elif text:
        plan = _text_student(arch, teacher, input_shape, num_outputs)
    else:
        plan = _tensor_student(arch, input_shape, num_outputs)
    if attention_loss and plan.arch["arch"] == "hf":
        config = plan.arch["config"]
        for key in _ATTENTION_DROPOUT_KEYS:
            if config.get(key):
                config[key] = 0.0
    return plan


def _tensor_student(arch: Arch, input_shape: tuple[int, ...], num_outputs: int) -> StudentPlan:
    if isinstance(arch, HfArch):
        raise UnsupportedInput(
            "An hf student reads text: it needs a Hugging Face teacher (hf_archive) with its "
            "tokenizer and jsonl data; for tensor data use mlp, cnn or transformer.",
            code="unsupported_arch",
        )
    return StudentPlan(arch.model_dump(), input_shape, num_outputs)


def _text_student(
    arch: Arch, teacher: Teacher, input_shape: tuple[int, ...], num_outputs: int
) -> StudentPlan:
    """Text students are transformers models, so that student_hf.zip can hold them: ``hf`` with
    its config, or ``transformer`` as a small BERT of the same sizes."""
    from worker.engine import hf

    if isinstance(arch, TransformerArch):
        config = {
            "model_type": "bert",
            "num_hidden_layers": arch.num_layers,
            "hidden_size": arch.hidden_size,
            "num_attention_heads": arch.num_heads,
            "intermediate_size": arch.intermediate_size or 4 * arch.hidden_size,
        }
    elif isinstance(arch, HfArch):
        config = dict(arch.config)
    else:
        raise UnsupportedInput(
            f"A {arch.arch} student cannot read text; for jsonl data use hf, transformer or "
            "from_teacher.",
            code="unsupported_arch",
        )
    assert isinstance(teacher.module, hf.HFClassifier)
    model = hf.build_hf_student(config, teacher.tokenizer, num_outputs, teacher.module.config)
    return StudentPlan(
        {"arch": "hf", "config": hf.hf_config_dict(model)}, input_shape, num_outputs, text=True
    )


def _from_teacher(
    layers: list[int], teacher: Teacher, input_shape: tuple[int, ...], num_outputs: int
) -> StudentPlan:
    if teacher.tokenizer is not None:
        from worker.engine import hf

        assert isinstance(teacher.module, hf.HFClassifier)
        check_layer_indices("student.layers", layers, teacher.module.num_layers, arch=True)
        model = hf.student_from_teacher(teacher.module, layers)
        arch = {"arch": "hf", "config": hf.hf_config_dict(model)}
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        note = f"Student: the teacher with its layers {layers} kept, initialised from them."
        return StudentPlan(arch, input_shape, num_outputs, True, start, note)
    teacher_arch = teacher.arch
    if teacher_arch is None or teacher_arch.get("arch") not in _LAYER_LISTS:
        raise UnsupportedInput(
            "A from_teacher student copies the teacher's layers, so the teacher must be a Hugging "
            "Face archive or a state_dict/safetensors teacher with an mlp, cnn or transformer "
            f"teacher.arch; this one is {teacher.format}.",
            code="unsupported_arch",
        )
    return _from_tensor_teacher(teacher_arch, teacher.module, layers, input_shape, num_outputs)


def _from_tensor_teacher(
    teacher_arch: dict,
    teacher: nn.Module,
    layers: list[int],
    input_shape: tuple[int, ...],
    num_outputs: int,
) -> StudentPlan:
    kind = teacher_arch["arch"]
    field = _LAYER_LISTS[kind]
    depth = teacher_arch[field] if kind == "transformer" else len(teacher_arch[field])
    check_layer_indices("student.layers", layers, depth, arch=True)
    arch = copy.deepcopy(teacher_arch)
    arch[field] = len(layers) if kind == "transformer" else [arch[field][i] for i in layers]
    student = build_model(arch, input_shape, num_outputs)
    skipped = _copy_layers(kind, teacher, student, layers)
    note = f"Student: the teacher's {kind} with its layers {layers} kept, initialised from them."
    if skipped:
        note += f" Freshly initialised where the shapes changed: {', '.join(skipped)}."
    start = {k: v.detach().clone() for k, v in student.state_dict().items()}
    return StudentPlan(arch, input_shape, num_outputs, False, start, note)


def _copy_layers(kind: str, teacher: nn.Module, student: nn.Module, layers: list[int]) -> list[str]:
    """Copy teacher layer ``layers[i]`` into student layer i; the weights around the layers (the
    input embedding, the head) are copied where their shape is unchanged. Returns the names of
    those that could not be; a kept layer that cannot be copied is an error naming its shapes."""
    t_names, s_names = _layer_names(kind, teacher), _layer_names(kind, student)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    mapped = {}
    for i, (s_name, j) in enumerate(zip(s_names, layers, strict=True)):
        t_name = t_names[j]
        for key in (k for k in s_state if k.startswith(f"{s_name}.")):
            source = t_name + key.removeprefix(s_name)
            if t_state[source].shape != s_state[key].shape:
                raise ShapeMismatch(
                    f"from_teacher: student layer {i} should start from teacher layer {j}, whose "
                    f"{source} is {list(t_state[source].shape)}, but the layer before it gives "
                    f"another width, so the student needs {list(s_state[key].shape)}. Keep "
                    "layers whose widths chain (or use a plain arch)."
                )
            mapped[key] = t_state[source]
    skipped = []
    for key, value in s_state.items():
        if key in mapped or any(key.startswith(f"{n}.") for n in s_names):
            continue
        if key in t_state and t_state[key].shape == value.shape:
            mapped[key] = t_state[key]
        else:
            skipped.append(key)
    student.load_state_dict(s_state | mapped)
    return skipped


def _layer_names(kind: str, model: nn.Module) -> list[str]:
    """The state-dict prefixes of the model's layers, in depth order."""
    if kind == "transformer":
        return [f"layers.{i}" for i in range(len(model.layers))]  # type: ignore[arg-type]
    wanted = (nn.Conv1d, nn.Conv2d) if kind == "cnn" else (nn.Linear,)
    container = "features" if kind == "cnn" else "body"
    return [
        f"{container}.{i}" for i, m in enumerate(getattr(model, container)) if isinstance(m, wanted)
    ]
