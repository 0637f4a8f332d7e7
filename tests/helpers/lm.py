"""Offline language-model fixtures: a byte-level BPE tokenizer with a chat template, trained on
the Rotten Tomatoes snippets (tests/helpers/text.py), tiny Llama models sized for it, a teacher
trained briefly on the snippets in the test process, and jsonl data of every LM kind.

Nothing downloads; a process builds the tokenizer and the trained teacher once (cached).
"""

import functools
import json
import random
from pathlib import Path
from typing import Any

import torch

from tests.helpers.text import rotten_tomatoes

# ChatML, as SmolLM2 and Qwen write it; a generation prompt opens the assistant's turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def lm_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` review snippets in a seeded shuffle: real English, one document each."""
    texts, _ = rotten_tomatoes()
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [texts[i] for i in order[:n]]


@functools.cache
def lm_tokenizer(vocab_size: int = 512, chat_template: bool = True) -> Any:
    """A byte-level BPE tokenizer (GPT-2 style) trained on 4,000 snippets, as a transformers
    fast tokenizer: eos ``<|endoftext|>``, pad ``<pad>``, and a ChatML template unless
    ``chat_template`` is False. Cached: callers must not change it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(lm_corpus(4000, seed=1), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<pad>",
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(
    tokenizer: Any,
    num_layers: int = 4,
    hidden_size: int = 64,
    heads: int = 4,
    intermediate: int = 128,
    max_positions: int = 256,
    tie: bool = True,
    seed: int = 0,
) -> Any:
    """A randomly initialised LlamaForCausalLM over ``tokenizer``'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def train_lm(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    steps: int = 150,
    batch_size: int = 32,
    lr: float = 3e-3,
    max_length: int = 64,
    seed: int = 0,
) -> Any:
    """A plain next-token AdamW loop over ``texts`` (each ending in eos); eval mode after."""
    encoded = tokenizer(
        [t + tokenizer.eos_token for t in texts],
        padding="longest",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randint(len(ids), (batch_size,), generator=generator)
        length = int(mask[batch].sum(1).max())
        labels = ids[batch, :length].masked_fill(mask[batch, :length] == 0, -100)
        out = model(
            input_ids=ids[batch, :length], attention_mask=mask[batch, :length], labels=labels
        )
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return model.eval()


@functools.cache
def trained_lm_teacher(num_layers: int = 4, steps: int = 150) -> Any:
    """A tiny Llama teacher (hidden 64) trained on 2,000 snippets: its predictions are far from
    uniform, so a student has something to learn from it. Cached: callers must not train it."""
    tokenizer = lm_tokenizer()
    model = tiny_llama(tokenizer, num_layers=num_layers)
    return train_lm(model, tokenizer, lm_corpus(2000), steps=steps)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def text_rows(texts: list[str]) -> list[dict]:
    return [{"text": t} for t in texts]


def prompt_completion_rows(texts: list[str]) -> list[dict]:
    """Each snippet cut after its first words: the prompt, and the rest as the completion."""
    rows = []
    for text in texts:
        words = text.split()
        cut = max(1, len(words) // 3)
        rows.append({"prompt": " ".join(words[:cut]), "completion": " " + " ".join(words[cut:])})
    return [r for r in rows if r["completion"].strip()]


def messages_rows(texts: list[str]) -> list[dict]:
    """A user asking for a review and the assistant answering with a snippet."""
    return [
        {
            "messages": [
                {"role": "user", "content": "Write a short film review."},
                {"role": "assistant", "content": text},
            ]
        }
        for text in texts
    ]


def prompt_rows(texts: list[str]) -> list[dict]:
    return [{"prompt": r["prompt"]} for r in prompt_completion_rows(texts)]
