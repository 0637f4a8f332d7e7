"""The distillation recipe for causal language models (``task: "causal_lm"``).

The training loop, checkpoints, resume, sweeps, early stopping and the baseline are the
classifier recipe's own (``worker.engine.recipe``); this recipe changes what they run on:

- ``setup`` reads the teacher's folder (an ``hf_archive``, or a ``gguf`` dequantized once),
  tokenises the data (``lm.data``), and makes sure the teacher's signal is stored: its top-k
  log-probabilities on every target token of the training and validation rows, computed in one
  teacher pass and kept content-addressed in the job's cache directory (``lm.signal``). A later
  job, sweep run, baseline or resumed job on the same teacher and data reads it instead: after
  setup the teacher is not in memory. ``teacher_top_k: 0`` keeps the teacher online instead, its
  full distribution on every batch.
- a step's loss is ``lm.losses.loss_from_hidden`` on the student's last hidden states, so no
  (batch x length x vocabulary) float32 tensor exists beyond one chunk.
- layer matching (``losses.hidden``) keeps the teacher online as well, for its paired layers'
  states on every batch (``lm.layers``); the logits loss still reads the stored signal, so a job
  with and one without it learn from the same teacher distribution.
- validation measures perplexity, agreement and KL on the validation tokens (``lm.evaluation``);
  ``finish`` adds speed, generations, the exported student and the card (``lm.results``).
"""

import gc
import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jobspec import FromTeacherArch
from jobspec import warnings as job_warnings
from worker.engine.errors import EngineError, ShapeMismatch, UnsupportedInput
from worker.engine.features import Features
from worker.engine.job import Callbacks, EngineJob, EngineResult
from worker.engine.layer_losses import LayerMatching
from worker.engine.lm import preflight as lm_preflight
from worker.engine.lm.data import (
    LMBatch,
    LMExample,
    LMRows,
    check_packing,
    collate,
    examples_from_completions,
    model_inputs,
    read_lm_examples,
    read_prompts,
    split_examples,
    to_rows,
)
from worker.engine.lm.evaluation import Scores, evaluate
from worker.engine.lm.folders import lm_folder
from worker.engine.lm.layers import (
    SAMPLE_TOKENS,
    base_model,
    default_pairs,
    recording,
    sample_features,
)
from worker.engine.lm.losses import DEFAULT_CHUNK_SIZE, Teacher, loss_from_hidden
from worker.engine.lm.models import (
    CausalLM,
    check_vocabularies,
    load_causal_lm,
    load_tokenizer,
    student_from_teacher,
)
from worker.engine.lm.signal import (
    MANIFEST,
    SignalReader,
    SignalWriter,
    TopKSignal,
    sampled_signal,
    signal_key,
    signal_kl,
    top_k_signal,
)
from worker.engine.losses import LossTerms
from worker.engine.recipe import DistillationRecipe
from worker.engine.reporting import ProgressClock
from worker.engine.runs import TrainingRun, autocast_dtype, torch_device
from worker.engine.teacher_cache import file_sha256

SIGNAL_KL_TOKENS = 2048  # validation tokens the store's accuracy is measured on
SAMPLING_SEED = 0x5EED  # a sampled signal's draws: the store is a function of its key


class LanguageModelling:
    """The causal_lm task, as a sweep ranks its runs: lower validation perplexity wins."""

    name = "causal_lm"

    def sweep_metric(self, labelled: bool) -> str:
        return "val_perplexity"

    def better(self, row: dict, best: dict) -> bool:
        return bool(row["val_perplexity"] < best["val_perplexity"])


@dataclass
class StudentPlan:
    """How every run's student starts: a model of ``model_class`` and ``config``, from
    ``initial`` weights (cut from the teacher, or a pretrained file's) or, with none, initialised
    from the run's seed."""

    model_class: type
    config: Any
    initial: dict[str, torch.Tensor] | None
    arch: dict

    def build(self) -> nn.Module:
        with torch.device("cpu"):
            model = self.model_class(self.config)
        if self.initial is not None:
            model.load_state_dict(self.initial)
        return model.train()


class LanguageModelRecipe(DistillationRecipe):
    def __init__(self, job: EngineJob, callbacks: Callbacks):
        super().__init__(job, callbacks)
        self.task = LanguageModelling()  # type: ignore[assignment]
        self.kind = job.spec.losses.logits
        self.beta = job.spec.losses.beta if job.spec.losses.beta is not None else 0.5
        self.top_k = int(job.spec.hyperparameters.teacher_top_k or 0)
        self.signal_method = job.spec.hyperparameters.teacher_signal or "top_k"
        self.draws = int(job.spec.hyperparameters.teacher_draws or 0)
        self.teacher_lm: CausalLM | None = None  # only while needed (online: all along)
        self.signals: dict[str, SignalReader] = {}
        self.teacher_status = "off"
        self.teacher_stats: dict[str, float | int] = {}

    # -- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        job, spec, hp = self.job, self.spec, self.hp
        self.device = torch_device(job.device)
        self.autocast_dtype = autocast_dtype(hp.precision, self.device)
        self.work_dir = Path(tempfile.mkdtemp(prefix="distill-lm-"))
        self.teacher_sha256 = job.teacher_sha256 or file_sha256(job.teacher_path)
        self.teacher_dir = self._folder(job.teacher_path, job.teacher_format, self.teacher_sha256)
        self.tokenizer = load_tokenizer(self.teacher_dir)
        self.vocab = len(self.tokenizer)
        self.pad_id = _pad_id(self.tokenizer)
        self._check_max_length()
        train, val, self.data_kind = self._examples()
        self.train_examples, self.val_examples = train, val
        self.train_rows = to_rows(train, spec.data.max_length, spec.data.packing)
        self.val_rows = to_rows(val, spec.data.max_length, spec.data.packing)
        self.plan = self._plan_student()  # type: ignore[assignment]
        student_params = self._student_params()
        self.teacher_params = self._teacher_params()
        if not job.checkpoint_path.exists():  # a resumed job has said these already
            split = None if job.validation_path else spec.data.validation_split
            for warning in job_warnings.at_setup(self.teacher_params, student_params, split):
                self.log(warning.message, warning.data, level="warning")
        self._check_memory(student_params)
        # Before the teacher pass, so that a pair that cannot be matched fails in seconds.
        self.sample_features = self._match_layers() if self.layer_specs else None
        if self.top_k > 0:
            self._store_signal()
        if self.teacher_online:
            self.load_teacher().model.to(self.device)
        else:
            self.let_go_of_teacher()
        if self.top_k == 0:
            self.teacher_stats = self._teacher_scores()
        self.train_size = len(self.train_rows)
        self.batches_per_epoch = math.ceil(self.train_size / hp.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / hp.grad_accumulation_steps)
        self.clock = ProgressClock(
            self.callbacks,
            job.progress_interval,
            self.steps_per_epoch,
            hp.epochs,
            self.phases,
            runs=len(self.sweep or [self.hp]),
        )
        self.log(
            f"Teacher ({job.teacher_format}, {self.teacher_params:,} parameters, vocabulary "
            f"{self.vocab:,}); {len(self.train_rows)} training rows "
            f"({self.train_rows.target_tokens:,} target tokens) and {len(self.val_rows)} "
            f"validation rows ({self.val_rows.target_tokens:,}) of {self.data_kind} data; "
            f"student of {student_params:,} parameters; on {self.device}."
        )

    def _folder(self, path: Path, fmt: str, sha256: str | None) -> Path:
        assert self.work_dir is not None
        return lm_folder(
            path,
            fmt,
            self.work_dir / _path_key(path),
            self.job.cache_dir,
            sha256,
            self.job.max_unpacked_bytes,
            on_log=lambda message: self.log(message),
        )

    def load_teacher(self) -> CausalLM:
        """The teacher, loaded on first use (on the CPU until a pass moves it)."""
        if self.teacher_lm is None:
            self.teacher_lm = load_causal_lm(self.teacher_dir)
            self.teacher_lm.tokenizer = self.tokenizer
            if self.spec.data.packing:
                check_packing(self.teacher_lm.model, self.spec.data.max_length)
        return self.teacher_lm

    @property
    def teacher_online(self) -> bool:
        """Whether the teacher stays in memory through training: for its full distribution
        (``teacher_top_k: 0``) or its layers (``losses.hidden``)."""
        return self.top_k == 0 or bool(self.layer_specs)

    def let_go_of_teacher(self) -> None:
        self.teacher_lm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _teacher_params(self) -> int:
        if self.teacher_lm is not None:
            return sum(p.numel() for p in self.teacher_lm.model.parameters())
        return _folder_params(self.teacher_dir)

    def _check_max_length(self) -> None:
        from worker.engine.hf import read_config

        config = read_config(self.teacher_dir)
        positions = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        max_length = self.spec.data.max_length
        if positions is not None and max_length > int(positions):
            raise UnsupportedInput(
                f"data.max_length {max_length} is beyond the teacher's {int(positions)} "
                f"positions; use at most {int(positions)}.",
                code="invalid_request",
            )

    # -- data -----------------------------------------------------------------------------------

    def _examples(self) -> tuple[list[LMExample], list[LMExample], str]:
        job, spec = self.job, self.spec
        kind, train = self._read(job.train_path, "training")
        if job.validation_path is None:
            train, val = split_examples(train, spec.data.validation_split, self.hp.seed)
        else:
            _, val = self._read(job.validation_path, "validation")
        if not train or not val:
            raise ShapeMismatch(
                f"There are {len(train)} training and {len(val)} validation examples; both need "
                "at least one.",
                code="not_enough_data",
            )
        return train, val, kind

    def _read(self, path: Path, name: str) -> tuple[str, list[LMExample]]:
        max_length = self.spec.data.max_length
        if not _prompt_only(path):
            return read_lm_examples(path, self.tokenizer, max_length)
        prompts = read_prompts(path)
        completions = self._completions(path, prompts, name)
        return "prompt", examples_from_completions(prompts, completions, self.tokenizer, max_length)

    def _completions(self, path: Path, prompts: list[str], name: str) -> list[str]:
        """The teacher's completions of ``prompts`` (sequence-level KD), written once per teacher,
        data and generation settings and kept beside the signal for later jobs."""
        from worker.engine.lm.measure import write_completions

        generation = self.spec.generation
        assert generation is not None  # the API defaults it for prompt-only data
        facts = {
            "teacher": self.teacher_sha256,
            "data": file_sha256(path),
            "generation": generation.model_dump(mode="json"),
            "template": _sha(self.tokenizer.chat_template or ""),
        }
        key = _sha(json.dumps(facts, sort_keys=True))
        where = self._cache_root() / "completions" / f"{key}.jsonl"
        if where.exists():
            self.log(f"Reusing the teacher's {len(prompts)} stored {name} completions.")
            return [json.loads(line)["completion"] for line in where.read_text().splitlines()]
        self.log(f"The teacher writes the completions of {len(prompts)} {name} prompts.")
        teacher = self.load_teacher()
        teacher.model.to(self.device)
        texts = write_completions(
            teacher.model,
            self.tokenizer,
            prompts,
            generation,
            on_progress=self._milestones(f"Teacher {name} completions", len(prompts)),
            device=self.device,
        )
        where.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"completion": t}) + "\n" for t in texts)
        _atomic_text(where, lines)
        if self.job.cache_dir is not None:
            self.callbacks.on_teacher_cache(where)
        return texts

    # -- the student ----------------------------------------------------------------------------

    def _plan_student(self) -> StudentPlan:
        from transformers import AutoConfig, AutoModelForCausalLM

        arch = self.spec.student
        arch_dict = arch.model_dump(mode="json")
        if arch.arch == "from_teacher":
            teacher = self.load_teacher()
            if arch.layers[-1] >= teacher.num_layers:
                raise UnsupportedInput(
                    f"The teacher has {teacher.num_layers} layers (0 to {teacher.num_layers - 1}); "
                    f"student.layers asks for layer {arch.layers[-1]}.",
                    code="unsupported_arch",
                )
            student = student_from_teacher(teacher.model, arch.layers)
            return StudentPlan(type(student), student.config, _cpu_copy(student), arch_dict)
        if arch.arch == "hf":
            config_dict = dict(arch.config)
            model_type = config_dict.pop("model_type")
            config_dict.setdefault("vocab_size", self.vocab)
            teacher_config = AutoConfig.from_pretrained(self.teacher_dir, local_files_only=True)
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                config_dict.setdefault(key, getattr(teacher_config, key, None))
            try:
                config = AutoConfig.for_model(model_type, **config_dict)
                with torch.device("meta"):
                    model_class = type(AutoModelForCausalLM.from_config(config))
            except (KeyError, ValueError, TypeError) as e:
                raise UnsupportedInput(
                    f"student.config is not a causal-LM config transformers knows: {e}",
                    code="unsupported_arch",
                ) from e
            if config.vocab_size < self.vocab:
                raise ShapeMismatch(
                    f"student.config vocab_size {config.vocab_size} is below the teacher "
                    f"tokenizer's {self.vocab} tokens.",
                    code="vocabulary_mismatch",
                )
            return StudentPlan(model_class, config, None, arch_dict)
        if arch.arch == "pretrained":
            if self.job.student_path is None or self.job.student_format is None:
                raise EngineError("The student's file was not staged.", code="file_missing")
            folder = self._folder(self.job.student_path, self.job.student_format, None)
            student = load_causal_lm(folder)
            teacher_side = CausalLM(_EmbeddingRows(self._embedding_rows()), self.tokenizer)
            check_vocabularies(teacher_side, student)
            model = student.model
            return StudentPlan(type(model), model.config, _cpu_copy(model), arch_dict)
        raise UnsupportedInput(
            f"A causal_lm student is from_teacher, hf or a pretrained file, not {arch.arch}.",
            code="unsupported_arch",
        )

    def _embedding_rows(self) -> int:
        from worker.engine.hf import read_config

        return int(read_config(self.teacher_dir).vocab_size)

    def _student_params(self) -> int:
        """The student's parameter count, tied weights once (as ``parameters()`` counts); with
        packing, the check that its attention keeps packed documents apart."""
        plan: StudentPlan = self.plan  # type: ignore[assignment]
        with torch.device("meta"):
            model = plan.model_class(plan.config)
        if self.spec.data.packing:
            check_packing(model, self.spec.data.max_length)
        return sum(p.numel() for p in model.parameters())

    def _check_memory(self, student_params: int) -> None:
        from worker.engine.hf import read_config

        plan: StudentPlan = self.plan  # type: ignore[assignment]
        config = plan.config
        width, teacher_width = _width(config), _width(read_config(self.teacher_dir))
        pairs = len(self._pairs()) if self.layer_specs else 0
        # A learned projection per pair, student width onto the teacher's, where they differ.
        projections = pairs * (width + 1) * teacher_width if width != teacher_width else 0
        estimate = lm_preflight.estimate_peak_bytes(
            student_params=student_params,
            trainable_params=student_params + projections,
            batch_size=self.hp.batch_size,
            max_length=self.spec.data.max_length,
            vocab_size=self.vocab,
            hidden_size=width,
            num_layers=int(config.num_hidden_layers),
            precision=self.hp.precision,
            optimizer=self.hp.optimizer,
            chunk_size=DEFAULT_CHUNK_SIZE,
            teacher_params=self.teacher_params if self.teacher_online else 0,
            teacher_logits=self.top_k == 0,
            matched_layers=pairs,
            teacher_hidden_size=teacher_width,
        )
        lm_preflight.check_fits(estimate, self.device)

    # -- layer matching -------------------------------------------------------------------------

    def _pairs(self) -> list[tuple[int, int]]:
        """The spec's pairs, or by default a from_teacher student's layers each with the teacher
        layer it was copied from (``lm.layers.default_pairs``)."""
        from worker.engine.hf import read_config

        given = self.layer_specs[0].layers
        if given is not None:
            return given
        plan: StudentPlan = self.plan  # type: ignore[assignment]
        arch = self.spec.student
        copied_from = list(arch.layers) if isinstance(arch, FromTeacherArch) else None
        teacher_layers = int(read_config(self.teacher_dir).num_hidden_layers)
        return default_pairs(copied_from, int(plan.config.num_hidden_layers), teacher_layers)

    def _match_layers(self) -> tuple[Features, Features]:
        """Resolve the pairs, and check them on one short row through both models: each paired
        layer exists and their shapes agree but for the width. The student's runs build their
        ``LayerMatching`` (with its projections) from the features returned."""
        self.layer_specs = [replace(spec, layers=self._pairs()) for spec in self.layer_specs]
        plan: StudentPlan = self.plan  # type: ignore[assignment]
        student = plan.build().to(self.device).eval()
        row = self.train_rows.input_ids[0][:SAMPLE_TOKENS]
        sample = LMRows([row], [torch.ones(len(row), dtype=torch.bool)])
        inputs = model_inputs(collate(sample, [0], self.pad_id, self.device))
        teacher = self.load_teacher().model.to(self.device)  # where it stays through training
        features = sample_features(student, inputs), sample_features(teacher, inputs)
        described = LayerMatching(self.layer_specs, *features).describe(*features)
        self.log("Layer matching: " + "; ".join(described) + ".")
        return features

    # -- the teacher's signal -------------------------------------------------------------------

    def _cache_root(self) -> Path:
        assert self.work_dir is not None
        return self.job.cache_dir if self.job.cache_dir is not None else self.work_dir / "cache"

    def _method(self, role: str) -> str:
        """How the ``role`` rows' signal picks its tokens: the spec's way for the training rows;
        always top-k for the validation rows, which only measure (agreement, KL, the validation
        loss), so that those figures mean the same whichever way the student was taught."""
        return self.signal_method if role == "train" else "top_k"

    def _store_k(self, role: str) -> int:
        """The ``role`` rows' store's k: the draws of a sampled store, else ``teacher_top_k``."""
        return self.draws if self._method(role) == "sampled" else self.top_k

    def _signal_dir(self, role: str) -> Path:
        """Where the signal of the ``role`` rows (train, validation) is stored: its key covers
        everything the signal depends on."""
        data = self._data_facts | {"role": role}
        key = signal_key(
            self.teacher_sha256,
            self._tokenizer_sha256,
            _sha(json.dumps(data, sort_keys=True)),
            self.spec.data.max_length,
            self._store_k(role),
            _sha(self.tokenizer.chat_template) if self.tokenizer.chat_template else None,
            self._method(role),
        )
        return self._cache_root() / "signals" / key

    @cached_property
    def _data_facts(self) -> dict[str, Any]:
        """What the rows are made of, read once for both stores: the files, the split, packing
        and the teacher's writing of prompt-only data."""
        spec, validation = self.spec, self.job.validation_path
        generation = spec.generation
        return {
            "train": file_sha256(self.job.train_path),
            "validation": None if validation is None else file_sha256(validation),
            "split": None if validation else spec.data.validation_split,
            "seed": None if validation else self.hp.seed,
            "packing": spec.data.packing,
            "generation": None if generation is None else generation.model_dump(mode="json"),
        }

    @cached_property
    def _tokenizer_sha256(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.teacher_dir.iterdir()):
            if path.name.startswith(("tokenizer", "vocab", "merges", "special_tokens", "added")):
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    def _store_signal(self) -> None:
        """Read the stored signal, or compute and store it in one teacher pass."""
        dirs = {"train": self._signal_dir("train"), "validation": self._signal_dir("validation")}
        hit = all((d / MANIFEST).exists() for d in dirs.values())
        self.teacher_status = "hit" if hit else "miss"
        passed = {"teacher_pass_seconds": 0.0, "teacher_pass_tokens": 0}
        for role, directory in dirs.items():
            if not (directory / MANIFEST).exists():
                shutil.rmtree(directory, ignore_errors=True)  # a pass that died half-way
                rows = self.train_rows if role == "train" else self.val_rows
                started = time.monotonic()
                self._teacher_pass(rows, directory, measure=role == "validation", role=role)
                passed["teacher_pass_seconds"] += time.monotonic() - started
                passed["teacher_pass_tokens"] += rows.target_tokens
            if self.job.cache_dir is not None:
                self.callbacks.on_teacher_cache(directory)
            self.signals[role] = SignalReader(directory)
        self.teacher_stats = dict(self.signals["validation"].stats)
        if self.signal_method == "sampled":  # the training store's own accuracy
            self.teacher_stats["signal_kl"] = self.signals["train"].stats["signal_kl"]
        train = self.signals["train"]
        if train.sequences != len(self.train_rows) or train.manifest["tokens"] != (
            self.train_rows.target_tokens
        ):
            raise EngineError(
                "The stored teacher signal does not match the training rows.", code="cache_stale"
            )
        how = f"top-{self.top_k}" if self.signal_method == "top_k" else f"{self.draws} draws"
        said = f"{how}, {train.bytes_per_token:.0f} bytes per token"
        if hit:
            self.log(f"Teacher signal found in the store: {said}.", {"teacher_cache": "hit"})
            return
        seconds, tokens = passed["teacher_pass_seconds"], passed["teacher_pass_tokens"]
        self.log(
            f"Teacher signal written to the store: {said}; the teacher pass read {tokens:,} "
            f"target tokens in {seconds:.1f} s ({tokens / max(seconds, 1e-9):.0f} tokens/s).",
            {"teacher_cache": self.teacher_status} | passed,
        )

    @torch.no_grad()
    def _teacher_pass(self, rows: LMRows, directory: Path, *, measure: bool, role: str) -> None:
        """One pass of the teacher over ``rows``, its signal written to ``directory``. Each store
        keeps its own accuracy (``signal_kl`` in its manifest's stats, on its first
        ``SIGNAL_KL_TOKENS`` tokens): the validation store, top-k, on validation tokens, with
        the teacher's loss there (``measure``); a sampled training store on training tokens
        (the validation store is shared by jobs of either kind, so it cannot hold it)."""
        teacher = self.load_teacher().model.to(self.device).eval()
        report = self._milestones(f"Teacher pass over the {role} rows", len(rows))
        nll, tokens, kl_tokens, kl_sum = 0.0, 0, 0, 0.0
        method = self._method(role)
        accuracy = measure or method == "sampled"
        # The draws are reproducible: the same store whenever it is rebuilt (a pass that died).
        generator = torch.Generator(self.device).manual_seed(SAMPLING_SEED)
        with SignalWriter(directory, self._store_k(role), method=method) as writer:
            for start in range(0, len(rows), self.hp.batch_size):
                indices = list(range(start, min(start + self.hp.batch_size, len(rows))))
                batch = collate(rows, indices, self.pad_id, self.device)
                logits = teacher(**model_inputs(batch)).logits[..., : self.vocab]
                for i in range(len(indices)):
                    mask = batch.target_mask[i : i + 1]
                    stored = self._signal_of(logits[i : i + 1], mask, method, generator)
                    writer.add(stored)
                    selected = logits[i][mask[0]].float()
                    if measure:
                        targets = batch.labels[i][mask[0]]
                        nll += float(F.cross_entropy(selected, targets, reduction="sum"))
                        tokens += stored.tokens
                    if accuracy and kl_tokens < SIGNAL_KL_TOKENS:
                        as_stored = _as_stored(stored, writer.logprob_dtype)
                        kl_sum += signal_kl(selected, as_stored) * stored.tokens
                        kl_tokens += stored.tokens
                report(indices[-1] + 1)
            if accuracy:
                writer.stats = {
                    "signal_kl": kl_sum / max(kl_tokens, 1),
                    "signal_kl_tokens": kl_tokens,
                }
            if measure:
                writer.stats |= {"teacher_nll": nll, "tokens": tokens}

    def _signal_of(
        self, logits: torch.Tensor, mask: torch.Tensor, method: str, generator: torch.Generator
    ) -> TopKSignal:
        if method == "sampled":
            return sampled_signal(logits, mask, self.draws, generator)
        return top_k_signal(logits, mask, self.top_k)

    def _teacher_scores(self) -> dict[str, float | int]:
        """The online teacher's own loss on the validation tokens."""
        teacher = self.load_teacher().model
        nll, tokens = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(self.val_rows), self.hp.batch_size):
                indices = list(range(start, min(start + self.hp.batch_size, len(self.val_rows))))
                batch = collate(self.val_rows, indices, self.pad_id, self.device)
                logits = teacher(**model_inputs(batch)).logits[..., : self.vocab]
                mask = batch.target_mask
                nll += float(
                    F.cross_entropy(logits[mask].float(), batch.labels[mask], reduction="sum")
                )
                tokens += int(mask.sum())
        return {"teacher_nll": nll, "tokens": tokens}

    def _milestones(self, what: str, total: int) -> Callable[..., None]:
        """A reporter of ``what``'s progress in quarters (events, not a flood of them)."""
        said = {0}

        def report(done: int, _total: int | None = None) -> None:
            quarter = 4 * done // max(total, 1)
            if quarter not in said:
                said.add(quarter)
                self.log(f"{what}: {done}/{total}.", {"done": done, "total": total})

        return report

    # -- train ----------------------------------------------------------------------------------

    def _loss(self, run: TrainingRun, index: torch.Tensor) -> LossTerms:
        indices = index.tolist()
        batch = collate(self.train_rows, indices, self.pad_id, self.device)
        if run.matching is not None:
            return self._loss_with_layers(run, run.matching, indices, batch)
        teacher = self._teacher_of("train")(indices, batch) if run.alpha > 0 else None
        with self._autocast():
            hidden = self._hidden(run.model, batch)
        return self._logits_loss(run, batch, hidden, teacher)

    def _loss_with_layers(
        self, run: TrainingRun, matching: LayerMatching, indices: list[int], batch: LMBatch
    ) -> LossTerms:
        """The logits loss plus the weighted hidden-state term, each model's paired layers
        recorded during the forward pass it runs anyway."""
        pairs = matching.pairs["hidden"]
        teacher, teacher_states = self._teacher_with_layers(
            [t for _, t in pairs], run.alpha > 0, indices, batch
        )
        with self._autocast(), recording(run.model, [s for s, _ in pairs]) as student_states:
            hidden = self._hidden(run.model, batch)
        terms = self._logits_loss(run, batch, hidden, teacher)
        matched = matching.hidden(student_states, teacher_states, batch.token_mask)
        total = terms.total + self.layer_specs[0].weight * matched
        return terms._replace(total=total, hidden=matched)

    def _logits_loss(
        self, run: TrainingRun, batch: LMBatch, hidden: torch.Tensor, teacher: Teacher
    ) -> LossTerms:
        weight, bias = self._head(run.model)
        return loss_from_hidden(
            hidden,
            weight,
            batch.target_mask,
            teacher,
            batch.labels if run.alpha < 1 else None,
            lm_head_bias=bias,
            kind=run.logits or self.kind,  # type: ignore[arg-type]
            beta=self.beta,
            temperature=run.temperature,
            alpha=run.alpha,
        )

    @torch.no_grad()
    def _teacher_with_layers(
        self, layers: list[int], signal: bool, indices: list[int], batch: LMBatch
    ) -> tuple[Teacher, dict[int, torch.Tensor]]:
        """The states of the teacher's ``layers`` and, with ``signal``, what the logits loss
        reads: its dense logits from the same forward pass at ``teacher_top_k: 0`` (else the
        pass stops before the LM head), the stored signal otherwise, as without matching."""
        teacher = self.load_teacher().model
        dense = signal and self.top_k == 0
        with recording(teacher, layers) as states:
            if dense:
                logits = teacher(**model_inputs(batch)).logits[..., : self.vocab]
            else:
                base_model(teacher)(**model_inputs(batch))
        if dense:
            return logits, states
        stored = self.signals["train"].batch(indices, self.device) if signal else None
        return stored, states

    def _teacher_of(self, role: str) -> Callable[[list[int], LMBatch], TopKSignal | torch.Tensor]:
        if role in self.signals:
            signal = self.signals[role]
            return lambda indices, batch: signal.batch(indices, self.device)
        teacher = self.load_teacher().model

        def dense(indices: list[int], batch: LMBatch) -> torch.Tensor:
            with torch.no_grad():
                return teacher(**model_inputs(batch)).logits[..., : self.vocab]

        return dense

    def _hidden(self, model: nn.Module, batch: LMBatch) -> torch.Tensor:
        """The model's last hidden states (after its final norm): the LM head is applied by the
        loss, a chunk at a time."""
        return base_model(model)(**model_inputs(batch)).last_hidden_state

    def _head(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The LM head's weight (and bias) over the tokenizer's tokens: padding rows past it
        are neither trained nor scored."""
        head = model.get_output_embeddings()  # type: ignore[operator]
        bias = head.bias[: self.vocab] if getattr(head, "bias", None) is not None else None
        return head.weight[: self.vocab], bias

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def validate(self, run: TrainingRun) -> dict:
        return self.scores(run.model, run.temperature, run.alpha, run.logits).metrics()

    def scores(
        self, model: nn.Module, temperature: float, alpha: float, kind: str | None = None
    ) -> Scores:
        """The validation scores; ``val_loss`` is the job's loss (``kind``: a sweep run's)."""
        return evaluate(
            model,
            lambda m, batch: self._hidden_for_eval(m, batch),
            self._head(model),
            self.val_rows,
            self._teacher_of("validation"),
            pad_id=self.pad_id,
            batch_size=self.hp.batch_size,
            device=self.device,
            kind=kind or self.kind,
            beta=self.beta,
            temperature=temperature,
            alpha=alpha,
        )

    def _hidden_for_eval(self, model: nn.Module, batch: LMBatch) -> torch.Tensor:
        with self._autocast():
            return self._hidden(model, batch)

    def sweep_row(self, run: TrainingRun) -> dict:
        return self.validate(run)

    # -- finish ---------------------------------------------------------------------------------

    def finish(self) -> EngineResult:
        from worker.engine.lm.results import write_lm_results

        return write_lm_results(self)

    def cleanup(self) -> None:
        names = (
            "teacher_lm",
            "signals",
            "train_rows",
            "val_rows",
            "runs",
            "plan",
            "sample_features",
        )
        for name in names:
            self.__dict__.pop(name, None)
        super().cleanup()


class _EmbeddingRows:
    """Stands in for the teacher's model where only its embedding's row count is asked."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def get_input_embeddings(self) -> Any:
        return nn.Embedding(self.rows, 1, device="meta")


def _width(config: Any) -> int:
    return int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0))


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _prompt_only(path: Path) -> bool:
    """Whether the jsonl file holds ``{"prompt"}``-only rows (the upload check made every row
    of one kind, so the first one tells)."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                return isinstance(row, dict) and set(row) == {"prompt"}
    return False


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _path_key(path: Path) -> str:
    """A folder name of its own for each file unpacked into the job's work dir."""
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]


def _folder_params(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118  (safe_open has no __iter__)
                total += math.prod(f.get_slice(name).get_shape())
    return total


def _as_stored(signal: TopKSignal, dtype: str) -> TopKSignal:
    """The signal as a reader will get it back: log-probs rounded to the stored dtype."""
    rounded = signal.logprobs.to(getattr(torch, dtype)).float()
    return TopKSignal(signal.ids, rounded, signal.tail, signal.counts)


def _atomic_text(path: Path, text: str) -> None:
    from worker.engine.artifacts import atomic_write

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)
