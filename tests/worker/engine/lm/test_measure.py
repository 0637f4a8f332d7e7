"""Measuring a language model: perplexity, generation (greedy and seeded sampling, our settings
only), generation speed, and the teacher writing the completions of prompt-only data."""

import copy
import math
from typing import Any

import pytest
import torch

from jobspec import Generation
from tests.helpers.lm import lm_tokenizer, tiny_llama, trained_lm_teacher
from worker.engine.errors import DataLoadError
from worker.engine.lm.measure import (
    generate_text,
    perplexity,
    tokens_per_second,
    write_completions,
)

PROMPTS = ["The film is", "A quiet, tender", "It is not", "An ambitious mess of"]


@pytest.fixture(scope="module")
def teacher() -> Any:
    return trained_lm_teacher()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return lm_tokenizer()


def _greedy_by_hand(model: Any, tokenizer: Any, prompt: str, n: int) -> str:
    """Greedy decoding written out: the argmax of a full forward pass, n times or up to eos."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    start = ids.shape[1]
    with torch.no_grad():
        for _ in range(n):
            token = model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, token.view(1, 1)], dim=1)
            if token.item() == tokenizer.eos_token_id:
                break
    return str(tokenizer.decode(ids[0, start:], skip_special_tokens=True))


# --- perplexity ---------------------------------------------------------------------------------


def test_perplexity_is_exp_of_the_mean_nll() -> None:
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * math.log(7.0), 10) == pytest.approx(7.0)


def test_perplexity_that_overflows_is_inf() -> None:
    assert perplexity(1e6, 1) == math.inf
    assert perplexity(math.inf, 3) == math.inf


def test_perplexity_of_no_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        perplexity(0.0, 0)


# --- generation ---------------------------------------------------------------------------------


def test_greedy_text_is_the_argmax_continuation(teacher: Any, tokenizer: Any) -> None:
    for prompt in PROMPTS[:2]:
        text = generate_text(teacher, tokenizer, prompt, 12)
        assert text == _greedy_by_hand(teacher, tokenizer, prompt, 12)
        assert text  # the trained teacher does not stop at once
        assert not text.startswith(prompt)  # the continuation only


def test_the_models_own_generation_config_does_not_change_the_text(
    teacher: Any, tokenizer: Any
) -> None:
    plain = generate_text(teacher, tokenizer, "The film is", 12)
    opinionated = copy.deepcopy(teacher)
    first = tokenizer("The film is" + plain, return_tensors="pt")["input_ids"][0, 3].item()
    config = opinionated.generation_config
    config.do_sample, config.temperature, config.top_k = True, 5.0, 3
    config.repetition_penalty, config.suppress_tokens = 20.0, [first]
    config.max_new_tokens = 2
    assert generate_text(opinionated, tokenizer, "The film is", 12) == plain
    assert opinionated.generation_config is config  # restored after
    assert config.suppress_tokens == [first]


def test_sampling_is_seeded(teacher: Any, tokenizer: Any) -> None:
    def sample(seed: int) -> str:
        return generate_text(teacher, tokenizer, "The film is", 16, temperature=1.5, seed=seed)

    texts = {seed: sample(seed) for seed in range(4)}
    assert sample(2) == texts[2]
    assert len(set(texts.values())) > 1  # the seed matters


def test_sampling_leaves_the_callers_random_state_alone(teacher: Any, tokenizer: Any) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate_text(teacher, tokenizer, "The film is", 4, temperature=1.0, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_generation_keeps_the_models_training_mode(tokenizer: Any) -> None:
    model = tiny_llama(tokenizer, num_layers=1).train()
    generate_text(model, tokenizer, "The film is", 3)
    assert model.training


def test_an_empty_prompt_starts_from_bos(teacher: Any, tokenizer: Any) -> None:
    text = generate_text(teacher, tokenizer, "", 8)
    assert text == generate_text(teacher, tokenizer, tokenizer.bos_token, 8)


def test_generation_without_any_eos_is_refused(tokenizer: Any) -> None:
    model = tiny_llama(tokenizer, num_layers=1)
    model.generation_config.eos_token_id = None
    no_eos = copy.deepcopy(tokenizer)
    no_eos.eos_token = None
    with pytest.raises(DataLoadError, match="no end-of-sequence"):
        generate_text(model, no_eos, "The film is", 3)


# --- speed --------------------------------------------------------------------------------------


def test_tokens_per_second_generates_exactly_max_new_tokens(
    teacher: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stops_early = [
        p
        for p in PROMPTS
        if len(tokenizer(generate_text(teacher, tokenizer, p, 40)).input_ids) < 30
    ]
    assert stops_early  # the teacher ends its sentences: without min_new_tokens, eos comes early
    model = copy.deepcopy(teacher)
    shapes: list[tuple[int, int]] = []
    generate = model.generate

    def counting(ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out = generate(ids, **kwargs)
        shapes.append((out.shape[0], out.shape[1] - ids.shape[1]))
        return out

    monkeypatch.setattr(model, "generate", counting)
    tokens_per_second(model, tokenizer, PROMPTS, max_new_tokens=40)
    assert shapes == [(1, 40)] * (1 + len(PROMPTS))  # one warm-up, then one per prompt, batch 1


def test_tokens_per_second_needs_a_prompt(teacher: Any, tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="at least one prompt"):
        tokens_per_second(teacher, tokenizer, [])


# --- sequence-level KD --------------------------------------------------------------------------


def test_write_completions_is_deterministic_and_reports_progress(
    teacher: Any, tokenizer: Any
) -> None:
    generation = Generation(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    progress: list[tuple[int, int]] = []
    first = write_completions(
        teacher, tokenizer, PROMPTS, generation, on_progress=lambda d, t: progress.append((d, t))
    )
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert write_completions(teacher, tokenizer, PROMPTS, generation) == first
    other_seed = generation.model_copy(update={"seed": 8})
    assert write_completions(teacher, tokenizer, PROMPTS, other_seed) != first


def test_a_completion_does_not_depend_on_the_other_prompts(teacher: Any, tokenizer: Any) -> None:
    generation = Generation(max_new_tokens=10, temperature=1.0, seed=3)
    together = write_completions(teacher, tokenizer, PROMPTS, generation)
    alone = write_completions(teacher, tokenizer, PROMPTS[:1], generation)
    assert alone == together[:1]


def test_greedy_completions_are_the_greedy_texts(teacher: Any, tokenizer: Any) -> None:
    completions = write_completions(teacher, tokenizer, PROMPTS, Generation(max_new_tokens=8))
    assert completions == [generate_text(teacher, tokenizer, p, 8) for p in PROMPTS]
