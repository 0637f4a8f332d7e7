"""The distillation recipe: ``setup`` (data, teacher, preflight), ``train`` (the student, then the
optional labels-only baseline), ``finish`` (metrics and artifacts).

The full training state goes into one checkpoint at every epoch end and on cancel; a run that
finds it resumes mid-epoch if need be, and ends bit-identical to one that was never stopped (CPU).
"""

import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from jobspec import Hyperparameters, JobSpec
from worker.engine import jit, onnx_export, preflight
from worker.engine.artifacts import write_metrics, write_student
from worker.engine.checkpoint import load_checkpoint, save_checkpoint
from worker.engine.data import Dataset, load_dataset, same_length, split_validation
from worker.engine.early_stopping import EarlyStopping
from worker.engine.errors import DeviceUnavailable, JobCancelled, LabelsRequired, UnsupportedInput
from worker.engine.evaluation import (
    latency_ms,
    predict,
)
from worker.engine.features import Features
from worker.engine.job import Callbacks, EngineJob, EngineResult, Phase
from worker.engine.layer_losses import LayerMatching, layer_loss_specs
from worker.engine.losses import LossTerms
from worker.engine.model_card import CardFacts, write_model_card
from worker.engine.models import count_parameters
from worker.engine.reporting import LossMeter, Reporter
from worker.engine.schedules import Schedules, alphas, temperatures
from worker.engine.students import plan_student
from worker.engine.sweep import SWEPT, SweepState, combinations
from worker.engine.tasks import task_of
from worker.engine.teacher import Teacher, load_teacher, load_text_teacher
from worker.engine.teacher_cache import TeacherOutputs, file_sha256, teacher_outputs


@dataclass
class TrainingRun:
    """One model being trained: the distilled ``student``, or the labels-only ``baseline``."""

    phase: Phase
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedules: Schedules
    stopper: EarlyStopping | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    matching: LayerMatching | None = None  # the layer-matching losses' projections, if any
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken (grad_accumulation_steps batches each)
    seconds: float = 0.0  # training time in earlier sessions of this job
    started: float | None = None  # monotonic time this session started training it
    meter: LossMeter = field(default_factory=LossMeter)
    # The current step's values: the schedules' first unless they change (set_step_values).
    temperature: float = field(init=False)
    alpha: float = field(init=False)

    def __post_init__(self) -> None:
        self.temperature, self.alpha = self.schedules.temperature[0], self.schedules.alpha[0]

    def set_step_values(self) -> None:
        """The schedules' values for the step about to be taken (the default path skips this)."""
        values = self.schedules.at(self.step)
        self.temperature, self.alpha = values.temperature, values.alpha
        for group in self.optimizer.param_groups:
            group["lr"] = values.learning_rate

    @property
    def stopped_early(self) -> bool:
        return self.stopper is not None and self.stopper.stopped_early

    def train_seconds(self) -> float:
        running = 0.0 if self.started is None else time.monotonic() - self.started
        return self.seconds + running


class DistillationRecipe:
    # Every epoch shows the teacher the very same training rows (there is no augmentation), so
    # its outputs can be computed once and cached. Anything that changes the inputs between
    # epochs must set this False, which sends the teacher back to running on every batch.
    inputs_fixed = True

    def __init__(self, job: EngineJob, callbacks: Callbacks):
        self.job = job
        self.spec = job.spec
        self.callbacks = callbacks
        self.hp = job.spec.hyperparameters
        self.task = task_of(job.spec)
        self.phases: list[Phase] = ["student", "baseline"] if job.spec.baseline else ["student"]
        # A sweep trains the student once per combination, each from the seed with the budget.
        sweep = job.spec.sweep
        self.sweep = [self.hp.model_copy(update=c) for c in combinations(sweep)] if sweep else None
        all_alphas = [a for hp in self.sweep or [self.hp] for a in alphas(hp)]
        self.alpha_range = min(all_alphas), max(all_alphas)
        self.layer_specs = layer_loss_specs(job.spec.losses)
        self.exports: list[str] = list(job.spec.export)
        self.work_dir: Path | None = None  # where a Hugging Face teacher is unpacked
        # Per phase, one entry per finished epoch (the model card's curves); checkpointed.
        self.history: dict[str, list[dict]] = {"student": [], "baseline": []}

    # -- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        hp = self.hp
        onnx_export.check_available(self.exports)  # before anything slow
        self.device = resolve_device(self.job.device)
        self.autocast_dtype = autocast_dtype(hp.precision, self.device)
        text = self.job.teacher_format == "hf_archive"
        if text:  # its data is read with its tokenizer, so it comes first
            self.teacher = self._load_text_teacher()
        self.train_data, self.val_data = self._load_data()
        baseline = len(self.phases) > 1
        preflight.check_labels_present(self.train_data, self.alpha_range[0], baseline)
        if hp.early_stopping is not None:
            self.task.check_early_stopping(hp.early_stopping.metric)
        if hp.early_stopping is not None:
            preflight.check_early_stopping(
                hp.early_stopping.metric, self.val_data, self.alpha_range[0], baseline
            )
        if not text:
            self.teacher = load_teacher(
                self.job.teacher_path,
                self.job.teacher_format,
                _arch(self.spec.teacher.arch),
                self.train_data.input_shape,
                self.device,
            )
        self.num_classes = preflight.check_inputs(
            self.teacher, self.train_data, self.val_data, hp.batch_size, self.task
        )
        self.plan = plan_student(
            self.spec.student,
            self.teacher,
            self.train_data.input_shape,
            self.num_classes,
            attention_loss=any(spec.kind == "attention" for spec in self.layer_specs),
        )
        if self.plan.note:
            self._log(self.plan.note)
        sample = self.train_data.x[: hp.batch_size]
        student = preflight.check_student(self.plan, sample, self.num_classes)
        self.sample_features: tuple[Features, Features] | None = None
        if self.layer_specs:
            *features, pairing = preflight.check_layer_losses(
                self.layer_specs, self.teacher, student, sample
            )
            self.sample_features = (features[0], features[1])
            self._log("Layer matching: " + "; ".join(pairing) + ".")
        # The teacher is frozen, so its validation logits never change: compute them once.
        self.val_teacher_logits = predict(self.teacher, self.val_data.x, hp.batch_size)
        self.teacher_outputs = self._teacher_outputs()
        self.batches_per_epoch = math.ceil(len(self.train_data) / hp.batch_size)
        # A step is an optimizer step; an epoch's last one may take fewer batches.
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / hp.grad_accumulation_steps)
        self.reporter = Reporter(
            self.callbacks,
            self.job.progress_interval,
            self.steps_per_epoch,
            hp.epochs,
            self.phases,
            runs=len(self.sweep or [self.hp]),
        )
        self._log(
            f"Teacher ({self.job.teacher_format}, {self.teacher.num_params:,} parameters) "
            f"gives {self.num_classes} {self.task.outputs_word}; "
            f"{len(self.train_data)} training and "
            f"{len(self.val_data)} validation rows of shape {self.train_data.input_shape}, "
            f"on {self.device}."
        )

    def _load_text_teacher(self) -> Teacher:
        self.work_dir = Path(tempfile.mkdtemp(prefix="distill-teacher-"))
        return load_text_teacher(
            self.job.teacher_path, self.work_dir, self.device, self.job.max_unpacked_bytes
        )

    def _teacher_outputs(self) -> TeacherOutputs:
        """The teacher's logits on the training rows, once for the whole job, when that is sound:
        every epoch shows it the same rows (``inputs_fixed``) and the loss uses them. Layer
        matching needs the teacher's layers on every batch, so it runs the teacher live."""
        job, teacher = self.job, self.teacher
        if self.layer_specs:
            return TeacherOutputs(teacher, None, "off")
        if not (job.teacher_cache and self.inputs_fixed and self.alpha_range[1] > 0):
            return TeacherOutputs(teacher, None, "off")
        key_parts = None
        if job.cache_dir is not None:
            key_parts = {
                "teacher_sha256": job.teacher_sha256 or file_sha256(job.teacher_path),
                "teacher_format": job.teacher_format,
                "teacher_arch": _arch(self.spec.teacher.arch),
                "device": self.device.type,  # a GPU's last bits differ from a CPU's
            }
        outputs = teacher_outputs(
            teacher,
            self.train_data.x,
            self.num_classes,
            key_parts,
            job.cache_dir,
            lambda level, message: self._log(message, level=level),
        )
        if outputs.path is not None:
            self.callbacks.on_teacher_cache(outputs.path)
        return outputs

    def _load_data(self) -> tuple[Dataset, Dataset]:
        job = self.job
        task = self.task.name
        tokenizer = getattr(self, "teacher", None) and self.teacher.tokenizer
        max_length = self.spec.data.max_length
        train = load_dataset(
            job.train_path, job.train_format, None, task, tokenizer or None, max_length
        )
        if job.validation_path is None:
            fraction = self.spec.data.validation_split
            train, val = split_validation(train, fraction, self.hp.seed)
        else:
            val = load_dataset(
                job.validation_path,
                job.validation_format or "",
                train.class_names,
                task,
                tokenizer or None,
                max_length,
            )
            if train.text:  # each file was padded to its own longest text
                train, val = same_length(train, val, tokenizer)
        return train.to(self.device), val.to(self.device)

    # -- train ----------------------------------------------------------------------------------

    def train(self) -> None:
        checkpoint = self._load_checkpoint()
        if checkpoint is not None and "history" in checkpoint:
            self.history = checkpoint["history"]
        self.runs: dict[Phase, TrainingRun] = {}
        self.sweep_state: SweepState | None = None
        for phase in self.phases:
            if phase == "student" and self.sweep is not None:
                self.runs[phase] = self._train_sweep(self.sweep, checkpoint)
                continue
            self.runs[phase] = self._start_run(phase, checkpoint)
            self._train(self.runs[phase])

    def _train_sweep(self, runs: list[Hyperparameters], checkpoint: dict | None) -> TrainingRun:
        """Train one student per combination, in order, and return the best on validation. The
        checkpoint carries the finished runs' rows and the best student so far, so a resumed
        sweep carries on with the run under way (or, in the baseline, with the sweep done)."""
        state = SweepState(self.task)
        if checkpoint is not None and "sweep" in checkpoint:
            state = SweepState.from_state(self.task, checkpoint["sweep"])
        self.sweep_state = state
        if checkpoint is not None and checkpoint["phase"] == "student":
            checkpoint = checkpoint if "sweep" in checkpoint else None
        while checkpoint is None or checkpoint["phase"] == "student":
            i = len(state.rows)
            if i == len(runs):
                checkpoint = None
                break
            self.reporter.run = i
            resuming = checkpoint is not None and checkpoint.get("sweep_run") == i
            run = self._start_run("student", checkpoint if resuming else None, runs[i])
            self.runs["student"] = run
            self._train(run)
            state.add(
                self._sweep_row(run, runs[i]),
                run.model,
                None if run.stopper is None else run.stopper.state_dict(),
                run.train_seconds(),
            )
            checkpoint = None
        assert state.best is not None and state.best_model is not None
        chosen = self._start_run("student", checkpoint, runs[state.best])
        if checkpoint is None:  # a checkpoint from the baseline holds the chosen student already
            chosen.model.load_state_dict(state.best_model)
            if chosen.stopper is not None and state.best_stopper is not None:
                chosen.stopper.load_state_dict(state.best_stopper)
            chosen.epoch, chosen.step = self.hp.epochs, self.hp.epochs * self.steps_per_epoch
        chosen.seconds = state.seconds
        self._log(f"Sweep done: run {state.best} of {len(runs)} chosen.", state.rows[state.best])
        return chosen

    def _sweep_row(self, run: TrainingRun, hp: Hyperparameters) -> dict:
        val = self._validate(run)
        swept = {name: getattr(hp, name) for name in SWEPT}
        outputs = predict(run.model, self.val_data.x, self.hp.batch_size)
        return swept | self.task.sweep_row(val, outputs, self.val_teacher_logits)

    def _train(self, run: TrainingRun) -> None:
        """Train ``run`` from where it stands to its last epoch (or until early stopping), reading
        the data in a seeded order per epoch, so that a run resumed mid-epoch sees the very same
        batches. With early stopping, the run ends with its best epoch's weights."""
        run.model.train()
        run.started = time.monotonic()
        self.reporter.begin(run.phase, run.step)
        while run.epoch < self.hp.epochs and not run.stopped_early:
            order = epoch_order(len(self.train_data), self.hp.seed, run.epoch).to(self.device)
            for i in range(run.step - run.epoch * self.steps_per_epoch, self.steps_per_epoch):
                self._optimizer_step(run, order, i)
                if i < self.steps_per_epoch - 1 and self.reporter.due():
                    self._report(run, run.meter.flush())
            run.epoch += 1
            self._end_epoch(run)
        if run.stopper is not None:
            run.stopper.restore_best(run.model)
        run.seconds, run.started = run.train_seconds(), None

    def _optimizer_step(self, run: TrainingRun, order: torch.Tensor, i: int) -> None:
        """Step ``i`` of the epoch: the gradients of its batches (up to grad_accumulation_steps;
        fewer at an epoch's end), averaged, then clipped and applied."""
        hp = self.hp
        if not run.schedules.constant:
            run.set_step_values()
        first = i * hp.grad_accumulation_steps
        batches = range(first, min(first + hp.grad_accumulation_steps, self.batches_per_epoch))
        run.optimizer.zero_grad(set_to_none=True)
        for b in batches:
            loss = self._loss(run, order[b * hp.batch_size : (b + 1) * hp.batch_size])
            total = loss.total if len(batches) == 1 else loss.total / len(batches)
            (total if run.scaler is None else run.scaler.scale(total)).backward()
            run.meter.add(loss)
        if run.scaler is not None:
            run.scaler.unscale_(run.optimizer)  # so clipping sees the true gradients
        if hp.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), hp.grad_clip_norm)
        if run.scaler is None:
            run.optimizer.step()
        else:
            run.scaler.step(run.optimizer)
            run.scaler.update()
        run.step += 1

    def _loss(self, run: TrainingRun, index: torch.Tensor) -> LossTerms:
        data = self.train_data
        x = data.x[index]
        y = data.y[index] if data.y is not None and run.alpha < 1 else None
        if run.matching is not None:
            return self._matching_loss(run, run.matching, x, y)
        teacher_logits = self.teacher_outputs(index, x) if run.alpha > 0 else None
        if self.autocast_dtype is None:
            student_logits = run.model(x)
        else:  # the loss casts the logits to float32 before its softmax
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                student_logits = run.model(x)
        return self.task.loss(student_logits, teacher_logits, y, run.temperature, run.alpha)

    def _matching_loss(
        self, run: TrainingRun, matching: LayerMatching, x: torch.Tensor, y: torch.Tensor | None
    ) -> LossTerms:
        """The output loss plus the weighted layer-matching terms, on the teacher run live."""
        teacher = self.teacher.features(x)
        if self.autocast_dtype is None:
            student = run.model.forward_features(x)  # type: ignore[operator]
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                student = run.model.forward_features(x)  # type: ignore[operator]
        terms = self.task.loss(student.logits, teacher.logits, y, run.temperature, run.alpha)
        layer_terms = matching(student, teacher)
        total = terms.total + sum(spec.weight * layer_terms[spec.kind] for spec in self.layer_specs)
        return terms._replace(
            total=total, hidden=layer_terms.get("hidden"), attention=layer_terms.get("attention")
        )

    def _end_epoch(self, run: TrainingRun) -> None:
        losses = run.meter.flush()  # raises on divergence, before a broken state is saved
        val = self._validate(run)
        self._record_epoch(run, run.meter.epoch_mean(), val)
        if run.stopper is not None:
            self._watch(run, run.stopper, val)
        self._save_checkpoint(run)
        self._log(f"{run.phase.capitalize()} epoch {run.epoch}/{self.hp.epochs} done.", val)
        self._report(run, losses, val)

    def _record_epoch(self, run: TrainingRun, train_loss: float | None, val: dict) -> None:
        entry = {"epoch": run.epoch, "train_loss": train_loss, **val}
        if self.sweep is not None and run.phase == "student":
            entry["run"] = self.reporter.run
        self.history[run.phase].append(entry)

    def _watch(self, run: TrainingRun, stopper: EarlyStopping, val: dict) -> None:
        value = val[stopper.metric]
        if value is None:  # setup's checks make this unreachable; say so rather than guess
            raise LabelsRequired(
                f"Early stopping on {stopper.metric} needs labelled validation data."
            )
        stopper.update(run.epoch, value, run.model)
        if stopper.should_stop and run.epoch < self.hp.epochs:
            stopper.stopped_early = True
            self._log(
                f"Stopping the {run.phase} early: {stopper.metric} has not improved for "
                f"{stopper.patience} epochs; keeping epoch {stopper.best_epoch}'s weights."
            )

    def _validate(self, run: TrainingRun) -> dict:
        outputs = predict(run.model, self.val_data.x, self.hp.batch_size)
        return self.task.validate(
            outputs, self.val_teacher_logits, self.val_data.y, run.temperature, run.alpha
        )

    def _report(self, run: TrainingRun, losses: dict, val: dict | None = None) -> None:
        """Send progress (and, for the student, a metric point), then honour a stop request."""
        points = []
        if run.phase == "student":
            learning_rate = run.optimizer.param_groups[0]["lr"]
            epoch = math.ceil(run.step / self.steps_per_epoch)
            step = self.reporter.job_step(run.phase, run.step)
            point = {"step": step, "epoch": epoch, **losses, "learning_rate": learning_rate}
            if self.sweep is not None:
                point["run"] = self.reporter.run
            points.append(point | (val or {}))
        self.reporter.send(run.phase, run.step, points)
        if self.callbacks.should_stop():
            if val is None:  # mid-epoch; at an epoch end the checkpoint is already saved
                self._save_checkpoint(run)
            self._log(f"Cancelled at step {run.step}; the checkpoint is saved.")
            raise JobCancelled(f"Cancelled at {run.phase} step {run.step}.")

    # -- checkpoints ----------------------------------------------------------------------------

    def _start_run(
        self, phase: Phase, checkpoint: dict | None, hp: Hyperparameters | None = None
    ) -> TrainingRun:
        """A fresh run from the seed, or the run as the checkpoint left it; ``hp`` is a sweep
        run's hyperparameters (the spec's by default)."""
        hp = hp or self.hp
        torch.manual_seed(hp.seed)  # the student and the baseline start from the same weights
        model = self.plan.build().to(self.device)
        matching = None
        if phase == "student" and self.sample_features is not None:
            matching = LayerMatching(self.layer_specs, *self.sample_features).to(self.device)
        trained = model if matching is None else nn.ModuleList([model, matching])
        run = TrainingRun(phase, model, make_optimizer(trained, hp), self._schedules(phase, hp))
        run.matching = matching
        if hp.early_stopping is not None:
            rule = hp.early_stopping
            run.stopper = EarlyStopping(rule.metric, rule.patience, rule.min_delta)
        if self.autocast_dtype == torch.float16:
            run.scaler = torch.amp.GradScaler(self.device.type)
        if checkpoint is None or phase not in checkpoint:
            return run
        model.load_state_dict(checkpoint[phase])
        if matching is not None and "matching" in checkpoint:
            matching.load_state_dict(checkpoint["matching"])
        run.seconds = checkpoint["train_seconds"][phase]
        if run.stopper is not None:
            run.stopper.load_state_dict(checkpoint["early_stopping"][phase])
        if checkpoint["phase"] == phase:  # this training was under way
            run.optimizer.load_state_dict(checkpoint["optimizer"])
            run.epoch, run.step = checkpoint["epoch"], checkpoint["step"]
            if run.scaler is not None:
                run.scaler.load_state_dict(checkpoint["scaler"])
            torch.set_rng_state(checkpoint["rng"])
            if "cuda_rng" in checkpoint and self.device.type == "cuda":
                torch.cuda.set_rng_state(checkpoint["cuda_rng"], self.device)
        else:  # the student had finished before the baseline began
            run.epoch, run.step = hp.epochs, hp.epochs * self.steps_per_epoch
        self._log(f"Resumed the {phase} at epoch {run.epoch}, step {run.step}.")
        return run

    def _schedules(self, phase: Phase, hp: Hyperparameters) -> Schedules:
        """The baseline gets the student's schedules and budget, with alpha held at 0."""
        return Schedules(
            base_lr=hp.learning_rate,
            lr_schedule=hp.lr_schedule,
            warmup_steps=hp.warmup_steps,
            temperature=temperatures(hp),
            alpha=alphas(hp) if phase == "student" else (0.0, 0.0),
            total_steps=hp.epochs * self.steps_per_epoch,
        )

    def _save_checkpoint(self, run: TrainingRun) -> None:
        state: dict[str, Any] = {
            "phase": run.phase,
            "epoch": run.epoch,
            "step": run.step,
            "optimizer": run.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "spec": _training_spec(self.spec),
            "train_seconds": {p: r.train_seconds() for p, r in self.runs.items()},
            "history": self.history,
        }
        state |= {p: r.model.state_dict() for p, r in self.runs.items()}
        if run.matching is not None:
            state["matching"] = run.matching.state_dict()
        if self.hp.early_stopping is not None:
            state["early_stopping"] = {
                p: r.stopper.state_dict() for p, r in self.runs.items() if r.stopper is not None
            }
        if run.scaler is not None:
            state["scaler"] = run.scaler.state_dict()
        if self.sweep_state is not None:
            state["sweep"] = self.sweep_state.state_dict()
            state["sweep_run"] = self.reporter.run if run.phase == "student" else None
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        save_checkpoint(self.job.checkpoint_path, state)
        self.callbacks.on_checkpoint(self.job.checkpoint_path)

    def _load_checkpoint(self) -> dict | None:
        try:
            checkpoint = load_checkpoint(self.job.checkpoint_path)
        except Exception as e:  # a checkpoint is a cache: losing it costs time, not the job
            self._log(f"Ignoring an unreadable checkpoint: {e}", level="warning")
            return None
        if checkpoint is None:
            return None
        if checkpoint["spec"] != _training_spec(self.spec):
            self._log("Ignoring a checkpoint made for a different job spec.", level="warning")
            return None
        return checkpoint

    # -- finish ---------------------------------------------------------------------------------

    def finish(self) -> EngineResult:
        student = self.runs["student"].model.eval()
        out = self.job.output_dir
        artifacts = write_student(
            out,
            student,
            self.plan.arch,
            self.train_data.input_shape,
            self.num_classes,
            self.train_data.class_names,
            torchscript=not self.plan.text,
        )
        if self.plan.text:
            from worker.engine import hf

            artifacts += hf.write_hf_student(out, student, self.teacher.tokenizer)
        onnx = self._export_onnx(student, artifacts) if "onnx" in self.exports else None
        metrics = self._metrics(student)
        artifacts.append(write_metrics(out, metrics))
        artifacts += write_model_card(out, self._card_facts(metrics, artifacts, onnx))
        self._log("Distillation finished.", metrics)
        return EngineResult(metrics, artifacts)

    def _export_onnx(self, student: nn.Module, artifacts: list[Path]) -> str:
        """Write student.onnx and say how it went. A student that does not export costs the job
        its ONNX file only: a warning, and the other artifacts as usual."""
        x = self.val_data.x[:8]
        try:
            if self.plan.text:
                from worker.engine.hf import HFClassifier
                from worker.engine.text import unpack

                assert isinstance(student, HFClassifier)
                ids, mask = unpack(x)
                export = onnx_export.export_text_student(
                    self.job.output_dir, student.model, ids, mask
                )
            else:
                export = onnx_export.export_tensor_student(self.job.output_dir, student, x)
        except onnx_export.ExportFailed as e:
            self._log(e.message, {"code": e.code}, level="warning")
            return e.message
        artifacts.append(export.path)
        line = onnx_export.describe(export)
        self._log(line)
        return line

    def _card_facts(self, metrics: dict, artifacts: list[Path], onnx: str | None) -> CardFacts:
        job = self.job
        return CardFacts(
            spec=self.spec.model_dump(mode="json"),
            metrics=metrics,
            history=self.history,
            teacher_format=job.teacher_format,
            teacher_bytes=job.teacher_path.stat().st_size,
            student_arch=self.plan.arch,
            input_shape=self.train_data.input_shape,
            num_outputs=self.num_classes,
            class_names=self.train_data.class_names,
            train_rows=len(self.train_data),
            val_rows=len(self.val_data),
            validation_split=job.validation_path is None,
            text=self.plan.text,
            artifacts=[p.name for p in artifacts],
            onnx=onnx,
            job_id=job.job_id,
            file_names=job.file_names,
        )

    def _metrics(self, student: nn.Module) -> dict:
        val, batch_size = self.val_data, self.hp.batch_size
        student_logits = predict(student, val.x, batch_size)
        # Time the artifact users deploy, student.pt, against the teacher as it was given.
        deployed = jit.load(self.job.output_dir / "student.pt", self.device)
        if self.plan.text:  # student.pt takes (input_ids, attention_mask)
            teacher_ms = latency_ms(self._traced_teacher(), val.x[:1])
            student_ms = latency_ms(lambda x: deployed(x[:, 0], x[:, 1]), val.x[:1])
        else:
            teacher_ms = latency_ms(self.teacher, val.x[:1])
            student_ms = latency_ms(deployed, val.x[:1])
        teacher_params, student_params = self.teacher.num_params, count_parameters(student)
        quality = self.task.quality(student_logits, self.val_teacher_logits, val.y)
        metrics: dict[str, Any] = quality | {
            "teacher_params": teacher_params,
            "student_params": student_params,
            "compression_ratio": teacher_params / student_params,
            "student_size_bytes": (self.job.output_dir / "student.safetensors").stat().st_size,
            "teacher_latency_ms": teacher_ms,
            "student_latency_ms": student_ms,
            "speedup": teacher_ms / student_ms,
            "train_seconds": self.runs["student"].train_seconds(),
            "device": str(self.device),
            "teacher_cache": self.teacher_outputs.status,
        }
        matching = self.runs["student"].matching
        if matching is not None:
            metrics["layer_pairs"] = {
                kind: [list(p) for p in pairs] for kind, pairs in matching.pairs.items()
            }
        if self.sweep_state is not None:
            chosen = self.sweep_state.table()[self.sweep_state.best or 0]
            metrics["sweep"] = self.sweep_state.table()
            metrics["chosen"] = {name: chosen[name] for name in SWEPT}
            metrics["sweep_metric"] = self.task.sweep_metric(val.y is not None)
        if "baseline" in self.runs:
            baseline_logits = predict(self.runs["baseline"].model, val.x, batch_size)
            metrics |= self.task.baseline_quality(baseline_logits, val.y)
            metrics["baseline_train_seconds"] = self.runs["baseline"].train_seconds()
        for phase, run in self.runs.items():
            if run.stopper is not None:
                prefix = "" if phase == "student" else "baseline_"
                metrics[f"{prefix}stopped_early"] = run.stopper.stopped_early
                metrics[f"{prefix}best_epoch"] = run.stopper.best_epoch
        return metrics

    def _traced_teacher(self) -> Callable[[torch.Tensor], object]:
        """A Hugging Face teacher timed as its student is: traced, so that the speed-up is the
        smaller model's, not TorchScript's lower overhead against eager transformers."""
        from worker.engine import hf

        assert isinstance(self.teacher.module, hf.HFClassifier)
        try:
            traced = hf.trace_student(self.teacher.module.model, self.teacher.tokenizer)
        except UnsupportedInput:  # an architecture that does not trace: time it as given
            return self.teacher
        return lambda x: traced(x[:, 0], x[:, 1])

    def cleanup(self) -> None:
        """Let go of the teacher, the data and the models now, and of the GPU memory they held:
        a failed job's traceback would otherwise keep them alive in a long-lived worker."""
        for name in (
            "teacher",
            "train_data",
            "val_data",
            "val_teacher_logits",
            "teacher_outputs",
            "runs",
        ):
            self.__dict__.pop(name, None)
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _log(self, message: str, data: dict | None = None, level: str = "info") -> None:
        self.callbacks.on_log(level, message, data)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceUnavailable(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from e
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise DeviceUnavailable(f"Device {name!r} is not available on this worker.")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the student's forward passes run in under autocast; None for plain float32."""
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise UnsupportedInput(
            f"precision fp16 needs a CUDA device, and this job runs on {device}; use bf16 or fp32.",
            code="unsupported_precision",
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UnsupportedInput(
            f"This GPU ({device}) does not support bf16; use fp16 or fp32.",
            code="unsupported_precision",
        )
    if precision not in ("bf16", "fp16"):
        raise UnsupportedInput(
            f"precision {precision!r} is not supported; use fp32, bf16 or fp16.",
            code="unsupported_precision",
        )
    return torch.bfloat16 if precision == "bf16" else torch.float16


def make_optimizer(model: nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    """``model``: what trains, the student with any layer-matching projections."""
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=hp.learning_rate, momentum=0.9, weight_decay=hp.weight_decay
        )
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay
        )
    raise UnsupportedInput(
        f"Optimizer {hp.optimizer!r} is not supported; use adamw or sgd.",
        code="unsupported_optimizer",
    )


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch, a function of (seed, epoch) alone, so resuming needs no
    shuffling state. Seeds are < 2**32 and epochs < 2**16, so each pair gets its own stream."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed << 16 | epoch))


def _training_spec(spec: JobSpec) -> dict:
    """The parts of a spec that shape training; its name, priority and webhook do not."""
    return spec.model_dump(mode="json", exclude={"name", "priority", "webhook_url"})


def _arch(arch: BaseModel | None) -> dict | None:
    """An arch as ``build_model`` and ``student.json`` take it: a plain dict."""
    return None if arch is None else arch.model_dump()
