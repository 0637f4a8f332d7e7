"""What a language model is measured by once trained, and the teacher writing completions:
perplexity from a summed NLL, greedy or sampled generation, generation speed at batch 1, and the
completions of ``{"prompt"}``-only data (sequence-level KD).

Generation uses only the settings given here. transformers fills every setting a
``GenerationConfig`` leaves unset from the model's own ``generation_config`` (a real model ships
its sampling defaults, a repetition penalty, suppressed tokens...), so while we generate the model
sees a blank one: a measurement means the same thing whatever the model's files say. Only the
model's end-of-sequence ids are kept, beside the tokenizer's, so that a chat model stops at the
end of its turn.
"""

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from jobspec import Generation
from worker.engine.errors import DataLoadError


def perplexity(nll_sum: float, tokens: int) -> float:
    """``exp`` of the mean negative log-likelihood per token; ``inf`` where that overflows
    (a model that gives the targets no probability at all)."""
    if tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got {tokens}")
    try:
        return math.exp(nll_sum / tokens)
    except OverflowError:
        return math.inf


@torch.no_grad()
def generate_text(
    model: Any,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> str:
    """The model's continuation of ``prompt`` (special tokens skipped): greedy at temperature 0,
    else sampled at ``temperature`` with nucleus ``top_p``, seeded so that the same call writes the
    same text. The model is moved to ``device`` (None: where it is)."""
    device = _place(model, device)
    ids = _prompt_ids(tokenizer, prompt, device)
    config = _generation_config(model, tokenizer, max_new_tokens, temperature, top_p)
    with _generating(model), torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(seed)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


@torch.no_grad()
def tokens_per_second(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int = 32,
    device: torch.device | str | None = None,
) -> float:
    """New tokens per second of greedy generation at batch 1 on ``device``, over ``prompts``,
    after one warm-up generation. Every prompt generates exactly ``max_new_tokens``: an early
    end-of-sequence would flatter a model that stops sooner."""
    if not prompts:
        raise ValueError("tokens_per_second needs at least one prompt")
    device = _place(model, device)
    config = _generation_config(model, tokenizer, max_new_tokens, 0.0, 1.0)
    config.min_new_tokens = max_new_tokens
    inputs = [_prompt_ids(tokenizer, p, device) for p in prompts]
    with _generating(model):
        model.generate(
            inputs[0], attention_mask=torch.ones_like(inputs[0]), generation_config=config
        )
        _synchronize(device)
        start = time.perf_counter()
        for ids in inputs:
            model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        _synchronize(device)
        seconds = time.perf_counter() - start
    return len(inputs) * max_new_tokens / seconds


def write_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    generation: Generation,
    on_progress: Callable[[int, int], None] | None = None,
    device: torch.device | str | None = None,
) -> list[str]:
    """The teacher's completion of each prompt (sequence-level KD), reporting ``(done, total)``
    after each.

    One prompt at a time, prompt i sampled with seed ``generation.seed + i``: a completion
    depends on its prompt, its place and the generation settings alone, never on which prompts
    shared a batch with it. Batching with left padding would be faster (about 2x on two CPU
    cores for the tiny test teacher) but cannot promise the same texts: sampling draws one random
    stream for the whole batch, and even greedy decoding may break a near-tie the other way when
    padding changes the shapes of the sums."""
    total = len(prompts)
    completions = []
    for i, prompt in enumerate(prompts):
        completions.append(
            generate_text(
                model,
                tokenizer,
                prompt,
                generation.max_new_tokens,
                temperature=generation.temperature,
                top_p=generation.top_p,
                seed=generation.seed + i,
                device=device,
            )
        )
        if on_progress is not None:
            on_progress(i + 1, total)
    return completions


# --- the settings and the model's state while generating ---------------------------------------


def _generation_config(
    model: Any, tokenizer: Any, max_new_tokens: int, temperature: float, top_p: float
) -> Any:
    from transformers import GenerationConfig

    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_beams=1,
        eos_token_id=eos,
        pad_token_id=pad,
        **(sampling if temperature > 0 else {"do_sample": False}),
    )


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's end-of-sequence id and the model's (one or a list), in that order."""
    own = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    own_ids = [own] if isinstance(own, int) else list(own or [])
    ids = [tokenizer.eos_token_id, *own_ids]
    unique = [int(i) for i in dict.fromkeys(ids) if i is not None]
    if not unique:
        raise DataLoadError(
            "The tokenizer has no end-of-sequence token, so generated text could not end.",
            code="unsupported_data",
        )
    return unique


@contextmanager
def _generating(model: Any) -> Iterator[None]:
    """Eval mode and a blank ``generation_config`` meanwhile (see the module's docstring);
    both restored after."""
    from transformers import GenerationConfig

    was_training, own = model.training, model.generation_config
    model.eval()
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = own
        model.train(was_training)


def _prompt_ids(tokenizer: Any, prompt: str, device: torch.device) -> torch.Tensor:
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        # An empty prompt: start from the beginning-of-sequence token, as a document would.
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else None
        if start is None:
            raise DataLoadError(
                "A prompt is empty and the tokenizer has no beginning-of-sequence token to "
                "start from; give every prompt some text.",
                code="unsupported_data",
            )
        ids = torch.tensor([[start]])
    return ids.to(device)


def _place(model: Any, device: torch.device | str | None) -> torch.device:
    if device is None:
        return next(model.parameters()).device
    device = torch.device(device)
    model.to(device)
    return device


def _cuda_devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
