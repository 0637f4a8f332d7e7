"""The memory preflight of language-model jobs (worker/engine/lm/preflight.py): its parts add up
and scale with the shapes as they should, it covers the measured peak of a real training step of
a small Llama on CPU, and a job that cannot fit is refused with what to change."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from worker.engine.errors import OutOfMemory
from worker.engine.lm import preflight

SHAPES = {
    "student_params": 1_000_000,
    "trainable_params": 800_000,
    "batch_size": 4,
    "max_length": 128,
    "vocab_size": 1000,
    "hidden_size": 64,
    "num_layers": 6,
    "precision": "fp32",
    "optimizer": "adamw",
    "chunk_size": 128,
}
MIB = 2**20
ROOT = Path(__file__).parents[4]  # python -c imports from its working directory


def parts(**changes: object) -> dict[str, int]:
    return preflight.peak_components(**(SHAPES | changes))  # type: ignore[arg-type]


def test_the_parts_of_a_small_case() -> None:
    tokens = 4 * 128
    assert parts() == {
        "weights": 1_000_000 * 4,
        "gradients": 800_000 * 4,
        "optimizer": 800_000 * 4 * 2,
        "activations": tokens * 64 * preflight.ACTIVATIONS_PER_LAYER * 7 * 4,
        "loss": preflight.LOSS_CHUNK_COPIES * 128 * 1000 * 4,
        "teacher": 0,
        "matching": 0,
    }
    estimate = preflight.estimate_peak_bytes(**SHAPES)  # type: ignore[arg-type]
    assert estimate == int(preflight.HEADROOM * sum(parts().values()))


def test_the_parts_scale_with_the_shapes() -> None:
    base = parts()
    assert parts(batch_size=8)["activations"] == 2 * base["activations"]
    assert parts(max_length=256)["activations"] == 2 * base["activations"]
    assert parts(num_layers=13)["activations"] == 2 * base["activations"]
    assert parts(precision="bf16")["activations"] == base["activations"] // 2
    assert parts(precision="bf16")["weights"] == base["weights"] * 3 // 2  # + the half copy
    assert parts(optimizer="sgd")["optimizer"] == base["optimizer"] // 2
    assert parts(trainable_params=0)["gradients"] == parts(trainable_params=0)["optimizer"] == 0
    assert parts(chunk_size=256)["loss"] == 2 * base["loss"]
    assert parts(chunk_size=10**6)["loss"] == 4 * 128 * base["loss"] // 128  # one batch at most
    online = parts(teacher_params=5_000_000)["teacher"]
    assert online == (5_000_000 + 4 * 128 * 1000) * 4  # its weights and its dense logits
    assert parts(teacher_params=5_000_000, batch_size=8)["teacher"] - online == 4 * 128 * 1000 * 4


def test_layer_matching_counts_the_teacher_and_the_matched_states() -> None:
    # The teacher online for its layers beside a stored signal: its weights, no dense logits.
    matched = parts(
        teacher_params=5_000_000, teacher_logits=False, matched_layers=3, teacher_hidden_size=128
    )
    assert matched["teacher"] == 5_000_000 * 4
    assert matched["matching"] == 3 * 4 * 128 * 128 * 4 * preflight.MATCHING_COPIES
    assert parts(matched_layers=6, teacher_hidden_size=128)["matching"] == 2 * matched["matching"]


# One training step of a Llama, as the recipe takes it (hidden states, then the chunked loss
# from them), in a fresh process: its peak resident memory during the step (the kernel's
# high-water mark, reset just before) over what it held before.
STEP = """
import json, torch
from pathlib import Path
from transformers import LlamaConfig, LlamaForCausalLM
from worker.engine.lm.losses import loss_from_hidden
def status(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    line = next(l for l in lines if l.startswith(field))
    return int(line.split()[1]) * 1024
torch.manual_seed(0)
torch.set_num_threads(1)
config = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                     tie_word_embeddings=True, attn_implementation="sdpa")
model = LlamaForCausalLM(config).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(0, 4096, (8, 256))
mask = torch.ones(8, 256, dtype=torch.bool)
Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
before = status("VmRSS:")
hidden = model.model(input_ids=ids).last_hidden_state
loss = loss_from_hidden(hidden, model.lm_head.weight, mask, labels=ids, alpha=0.0, chunk_size=128)
loss.total.backward()
optimizer.step()
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"grown": status("VmHWM:") - before, "params": params}))
"""


def test_the_estimate_covers_a_measured_training_step() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STEP)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    shapes = SHAPES | {
        "student_params": measured["params"],
        "trainable_params": measured["params"],
        "batch_size": 8,
        "max_length": 256,
        "vocab_size": 4096,
        "hidden_size": 256,
        "num_layers": 4,
    }
    estimated = preflight.peak_components(**shapes)  # type: ignore[arg-type]
    # The weights were resident before the step: what grew is the rest.
    step = sum(estimated.values()) - estimated["weights"]
    assert measured["grown"] <= step, (measured, estimated)
    assert step < 4 * measured["grown"], (measured, estimated)  # conservative, not vacuous


def test_a_job_that_cannot_fit_is_refused_with_what_to_change() -> None:
    with pytest.raises(OutOfMemory) as refused:
        preflight.check_fits(3 * 2**30, torch.device("cpu"), free_memory=lambda _: 2**30)

    assert refused.value.code == "out_of_memory"
    message = refused.value.message
    assert "3.00 GiB" in message and "1.00 GiB free" in message
    assert "batch_size" in message and "max_length" in message and "smaller student" in message


def test_a_job_that_fits_passes() -> None:
    preflight.check_fits(2**30, torch.device("cpu"), free_memory=lambda _: 2**30)
    preflight.check_fits(2**40, torch.device("mps"), free_memory=lambda _: None)  # unknown


def test_this_machine_s_free_memory_is_found() -> None:
    free = preflight.free_bytes(torch.device("cpu"))
    assert free is not None and free > 0
    with open("/proc/meminfo") as meminfo:
        total = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    assert free <= total * 1024


BOUNDED = """
import resource, torch
from worker.engine.lm import preflight
size = preflight._address_space()
resource.setrlimit(resource.RLIMIT_AS, (size + 100 * 2**20, resource.RLIM_INFINITY))
print(preflight.free_bytes(torch.device("cpu")))
"""


def test_a_bounded_training_process_counts_only_what_its_bound_leaves() -> None:
    """The worker bounds a CPU job's address space (worker/sandbox): free RAM beyond the bound
    is not the job's."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BOUNDED)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert 0 < int(done.stdout.split()[-1]) <= 100 * MIB
