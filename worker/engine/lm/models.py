"""Causal language models: the teacher loaded from a plain Hugging Face folder (a GGUF file
becomes one first, ``lm.gguf.gguf_to_hf``), students cut from the teacher by depth, and the check
that a pretrained student's vocabulary is the teacher's.

Models are transformers ``*ForCausalLM`` of any architecture transformers ships (never remote
code), loaded with ``local_files_only=True`` and ``trust_remote_code=False``. Nothing here is
specific to Llama: layers are found as the one ``nn.ModuleList`` as long as the config's depth.
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from file_rules.vocabulary import vocabulary_difference
from worker.engine.errors import ShapeMismatch, TeacherLoadError, UnsupportedInput, last_line
from worker.engine.hf import quiet_transformers, read_config, refuse_remote_code


@dataclass
class CausalLM:
    model: Any  # a transformers *ForCausalLM
    tokenizer: Any

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def embedding_rows(self) -> int:
        """Rows of the input embedding: the tokenizer's length, or more (padding rows)."""
        return int(self.model.get_input_embeddings().num_embeddings)


# --- loading and saving ------------------------------------------------------------------------


def load_causal_lm(
    model_dir: Path, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> CausalLM:
    """The causal LM and tokenizer saved in ``model_dir``, in ``dtype``, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    refuse_remote_code(model_dir)
    config = read_config(model_dir)
    _require_causal_lm(config)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            model_dir,
            config=config,
            dtype=dtype,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False
        )
    except Exception as e:
        raise TeacherLoadError(f"Could not load the language model: {last_line(e)}") from e
    model.to(device or torch.device("cpu"))
    return CausalLM(model.eval(), tokenizer)


def load_tokenizer(model_dir: Path) -> Any:
    """The tokenizer saved in ``model_dir`` (with its chat template), without the model."""
    from transformers import AutoTokenizer

    quiet_transformers()
    refuse_remote_code(model_dir)
    try:
        return AutoTokenizer.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False
        )
    except Exception as e:
        raise TeacherLoadError(f"Could not load the tokenizer: {last_line(e)}") from e


def save_causal_lm(lm: CausalLM, dest: Path) -> None:
    """A folder that ``AutoModelForCausalLM`` and ``AutoTokenizer.from_pretrained`` load alone:
    config, generation config, safetensors, the tokenizer and its chat template."""
    lm.model.save_pretrained(dest)
    lm.tokenizer.save_pretrained(dest)


def _require_causal_lm(config: Any) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith("ForCausalLM") for a in architectures):
        raise TeacherLoadError(
            f"The model is a {', '.join(architectures)}, not a causal language model "
            "(a *ForCausalLM, loadable with AutoModelForCausalLM)."
        )
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise UnsupportedInput(
            f"transformers has no causal-LM model for model_type {config.model_type!r}.",
            code="unsupported_arch",
        )


# --- students cut from the teacher -------------------------------------------------------------


def student_from_teacher(
    teacher: Any, layers: Sequence[int], *, dtype: torch.dtype = torch.float32
) -> Any:
    """Depth pruning (Minitron, DistilBERT): a model of the teacher's class and config with
    ``len(layers)`` layers, student layer i initialised from teacher layer ``layers[i]``;
    embeddings, final norm and LM head copied (tied ones stay tied). Config lists with one entry
    per layer (``layer_types``: sliding or full attention) keep the kept layers' entries. Layer
    attributes such as ``layer_idx`` (the KV cache's slot) are the student's own, 0 to n - 1,
    since the student is built from its config. ``layers`` are the teacher's, increasing (the
    spec and ``check_layer_indices`` have seen to that). Returned on the CPU, trainable."""
    config = copy.deepcopy(teacher.config)
    depth = config.num_hidden_layers
    for key, value in config.to_dict().items():
        if isinstance(value, list) and len(value) == depth and hasattr(config, key):
            setattr(config, key, [value[i] for i in layers])
    config.num_hidden_layers = len(layers)
    with torch.device("cpu"):
        student = type(teacher)(config).to(dtype)
    prefix = layer_prefix(teacher)
    state = teacher.state_dict()
    remapped = {k: v for k, v in state.items() if not k.startswith(prefix)}
    for i, source in enumerate(layers):
        old = f"{prefix}{source}."
        remapped.update(
            {f"{prefix}{i}.{k[len(old) :]}": v for k, v in state.items() if k.startswith(old)}
        )
    try:
        student.load_state_dict(remapped, strict=True)
    except RuntimeError as e:
        raise UnsupportedInput(
            f"Could not copy the teacher's weights into its {len(layers)}-layer copy: "
            f"{last_line(e)}",
            code="unsupported_arch",
        ) from e
    return student.train()


def layer_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the transformer's layers (``model.layers.``,
    ``transformer.h.``, ...), found by shape: the one ModuleList as long as the config's depth."""
    depth = model.config.num_hidden_layers  # type: ignore[union-attr]
    names = [
        n for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == depth
    ]
    if len(names) != 1:
        raise UnsupportedInput(
            f"Could not find the {depth} layers of this {type(model).__name__}; depth pruning "
            "needs a model with one list of transformer layers.",
            code="unsupported_arch",
        )
    return names[0] + "."


# --- vocabularies ------------------------------------------------------------------------------


def tokens(tokenizer: Any) -> list[str]:
    """The tokenizer's tokens by id, added tokens included."""
    return list(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))


def check_vocabularies(teacher: CausalLM, student: CausalLM) -> None:
    """A pretrained student must share the teacher's tokens; embedding rows past a tokenizer's
    length (padding for tensor cores) are ignored on either side, rows short of it are not.
    Raises ``ShapeMismatch`` with code ``vocabulary_mismatch``."""
    for name, lm in (("teacher", teacher), ("student", student)):
        if lm.embedding_rows < len(lm.tokenizer):
            raise ShapeMismatch(
                f"The {name}'s embedding has {lm.embedding_rows:,} rows, fewer than its "
                f"tokenizer's {len(lm.tokenizer):,} tokens.",
                code="vocabulary_mismatch",
            )
    difference = vocabulary_difference(tokens(teacher.tokenizer), tokens(student.tokenizer))
    if difference is not None:
        raise ShapeMismatch(difference.message, code="vocabulary_mismatch")
