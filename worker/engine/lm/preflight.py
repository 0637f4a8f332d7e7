"""Will a language-model job fit its device? Estimated from the shapes before anything is
trained, so that a job that cannot fit fails in seconds with ``out_of_memory`` and what to change,
not hours in with a crash.

The estimate is the sum of what one training step holds at its peak, in bytes:

- the student's weights, float32 (training keeps float32 master weights whatever the precision),
  and under bf16/fp16 autocast a half-precision copy of them made for the matmuls;
- its gradients, float32, one per trainable parameter;
- the optimizer's state, float32 per trainable parameter: AdamW two tensors (first and second
  moments), SGD one (momentum);
- the activations kept for the backward pass: ``ACTIVATIONS_PER_LAYER`` values of ``hidden_size``
  per token per layer (and one more layer's worth for the embeddings and the final norm), in the
  autocast dtype (float32 under fp32). Korthikanti et al. (2022) count 34 bytes per hidden unit
  per token for a GPT layer in 16-bit, i.e. 17 values; a gated MLP (Llama, Qwen) with an
  intermediate size up to 4x the hidden size keeps about 25 (norm inputs and outputs, q, k, v,
  the attention output, and gate, up, their activation and product). 34 values leaves room for
  wider MLPs. Attention is counted as SDPA holds it, without a (length x length) score matrix
  per head; an eager attention implementation would need more;
- the loss: one chunk of ``chunk_size`` positions over the whole vocabulary in float32,
  ``LOSS_CHUNK_COPIES`` times (the logits, their float32 copy, the log-softmax, and its gradient
  in the backward pass; lm/losses.py keeps no more than one chunk), the student's logits being
  computed from its last hidden states chunk by chunk (``loss_from_hidden``), never whole;
- with the teacher online (``teacher_params > 0``: ``teacher_top_k: 0``, or layer matching):
  its float32 weights and, at ``teacher_top_k: 0`` (``teacher_logits``), its dense float32
  logits of the whole batch (batch x length x vocab), which the loss reads chunk by chunk. A
  stored signal's batch (k ids and log-probs a token) is negligible;
- layer matching (``losses.hidden``): per matched pair, ``MATCHING_COPIES`` float32 tensors of
  the batch's tokens at the teacher's width (the teacher layer's states, kept from its forward
  pass, and the student's projected onto them, kept for the backward pass). The student's own
  layer outputs are activations already counted, and the projections' weights are trainable
  parameters the caller counts in ``trainable_params``.

plus ``HEADROOM`` for the allocator's fragmentation and the library's workspaces. It leans high:
a job refused here could sometimes have run, a job let through should not run out.
"""

import os
import resource
from collections.abc import Callable
from pathlib import Path

import torch

from worker.engine.errors import OutOfMemory

FLOAT32 = 4
HALF = 2
ACTIVATIONS_PER_LAYER = 34  # values of hidden_size per token per layer
LOSS_CHUNK_COPIES = 4
MATCHING_COPIES = 2  # per matched pair: the teacher's states and the student's, projected
OPTIMIZER_STATES = {"adamw": 2, "sgd": 1}  # float32 tensors per trainable parameter
HEADROOM = 1.1
GIB = 2**30


def estimate_peak_bytes(
    *,
    student_params: int,
    trainable_params: int,
    batch_size: int,
    max_length: int,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    precision: str,
    optimizer: str,
    chunk_size: int,
    teacher_params: int = 0,
    teacher_logits: bool = True,
    matched_layers: int = 0,
    teacher_hidden_size: int = 0,
) -> int:
    """The peak memory of one training step, in bytes (module docstring: what is counted)."""
    return int(
        HEADROOM
        * sum(
            peak_components(
                student_params=student_params,
                trainable_params=trainable_params,
                batch_size=batch_size,
                max_length=max_length,
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                num_layers=num_layers,
                precision=precision,
                optimizer=optimizer,
                chunk_size=chunk_size,
                teacher_params=teacher_params,
                teacher_logits=teacher_logits,
                matched_layers=matched_layers,
                teacher_hidden_size=teacher_hidden_size,
            ).values()
        )
    )


def peak_components(
    *,
    student_params: int,
    trainable_params: int,
    batch_size: int,
    max_length: int,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    precision: str,
    optimizer: str,
    chunk_size: int,
    teacher_params: int = 0,
    teacher_logits: bool = True,
    matched_layers: int = 0,
    teacher_hidden_size: int = 0,
) -> dict[str, int]:
    """The estimate's parts, before the headroom: weights, gradients, optimizer, activations,
    loss, teacher (0 when the teacher is not in training memory) and matching (0 without layer
    matching)."""
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    mixed = precision in ("bf16", "fp16")
    tokens = batch_size * max_length
    activation_bytes = HALF if mixed else FLOAT32
    teacher = teacher_params + (tokens * vocab_size if teacher_logits else 0)
    return {
        "weights": student_params * (FLOAT32 + (HALF if mixed else 0)),
        "gradients": trainable_params * FLOAT32,
        "optimizer": trainable_params * FLOAT32 * OPTIMIZER_STATES[optimizer],
        "activations": (
            tokens * hidden_size * ACTIVATIONS_PER_LAYER * (num_layers + 1) * activation_bytes
        ),
        "loss": LOSS_CHUNK_COPIES * min(chunk_size, tokens) * vocab_size * FLOAT32,
        "teacher": teacher * FLOAT32 if teacher_params else 0,
        "matching": matched_layers * tokens * teacher_hidden_size * FLOAT32 * MATCHING_COPIES,
    }


def check_fits(
    estimate: int,
    device: torch.device,
    free_memory: Callable[[torch.device], int | None] | None = None,
) -> None:
    """Raise ``OutOfMemory`` when ``estimate`` bytes exceed what ``device`` has free
    (``free_memory``: ``free_bytes`` unless a caller, such as a test, gives another)."""
    free = (free_memory or free_bytes)(device)
    if free is None or estimate <= free:
        return
    raise OutOfMemory(
        f"This job needs about {estimate / GIB:.2f} GiB of memory at its peak (estimated from "
        f"the models' and the batch's shapes), and {device.type} has {free / GIB:.2f} GiB free. "
        "Lower hyperparameters.batch_size or data.max_length (activations grow with both), use "
        "a smaller student, or precision bf16 on a GPU; with teacher_top_k 0 or losses.hidden the "
        "teacher is in memory too, which a stored signal (teacher_top_k > 0) without layer "
        "matching avoids."
    )


def free_bytes(device: torch.device) -> int | None:
    """Memory this process can still take on ``device``, or None where unknown. CUDA: the
    driver's free memory plus what this process's allocator holds unused. CPU: the machine's
    available memory, and no more than this process's address-space bound leaves (the worker
    bounds CPU jobs, worker/sandbox)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    available = _available_ram()
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        available = min(available, max(limit - _address_space(), 0))
    return available


def _available_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _address_space() -> int:
    """This process's virtual size (what RLIMIT_AS bounds), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0
