"""What would make transformers run Python code it does not ship: refused in a Hugging Face
archive's configs at upload (app/files/formats/hf.py) and again when the worker unpacks it
(worker/engine/hf.py), and in an hf student's config (jobspec). Distillery never enables
``trust_remote_code``; only models built into transformers are accepted."""

from collections.abc import Mapping
from typing import Any

# The configs transformers reads from a model folder before it builds the model or tokenizer.
CONFIG_FILES = ("config.json", "tokenizer_config.json")
# ``auto_map`` names classes in the folder's own .py files; ``trust_remote_code`` asks to run them.
REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code")


def remote_code_keys(config: Mapping[str, Any]) -> list[str]:
    """The keys of ``config`` that ask for remote code, in REMOTE_CODE_KEYS order."""
    return [key for key in REMOTE_CODE_KEYS if key in config]
