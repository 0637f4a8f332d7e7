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
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch
from pydantic import BaseModel
from torch import nn

from jobspec import Hyperparameters, JobSpec
from jobspec import warnings as job_warnings
from worker.engine import onnx_export, preflight, sharded_checkpoint
from worker.engine.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from worker.engine.data import Dataset, load_dataset, same_length, split_validation
from worker.engine.early_stopping import EarlyStopping
from worker.engine.errors import JobCancelled, LabelsRequired, TrainingDiverged
from worker.engine.evaluation import predict
from worker.engine.features import Features
from worker.engine.job import Callbacks, EngineJob, EngineResult, Phase
from worker.engine.layer_losses import LayerMatching, layer_loss_specs
from worker.engine.losses import LossTerms
from worker.engine.models import count_parameters
from worker.engine.reporting import ProgressClock
from worker.engine.results import write_results
from worker.engine.runs import (
    TrainingRun,
    autocast_dtype,
    epoch_order,
    make_optimizer,
    torch_device,
)
from worker.engine.schedules import Schedules, alphas, temperatures
from worker.engine.students import plan_student
from worker.engine.sweep import SweepRun, SweepState, sweep_runs, train_sweep
from worker.engine.tasks import task_of
from worker.engine.teacher import Teacher, load_teacher, load_text_teacher
from worker.engine.teacher_cache import TeacherOutputs, file_sha256, teacher_outputs

if TYPE_CHECKING:
    from worker.engine.distributed import Gang


class DistillationRecipe:
    def __init__(self, job: EngineJob, callbacks: Callbacks, gang: "Gang | None" = None):
        self.job = job
        # On several ranks (distributed.py): this process's place among them. Each rank trains
        # its share of every batch; rank 0 alone reports and finishes (the others are given
        # NullCallbacks).
        self.gang = gang
        self.spec = job.spec
        self.callbacks = callbacks
        self.hp = job.spec.hyperparameters
        self.task = task_of(job.spec)
        self.phases: list[Phase] = ["student", "baseline"] if job.spec.baseline else ["student"]
        # A sweep trains the student once per combination, each from the seed with the budget.
        sweep = job.spec.sweep
        self.sweep = sweep_runs(self.hp, sweep) if sweep else None
        every_hp = [run.hp for run in self.sweep] if self.sweep else [self.hp]
        self.largest_alpha = max(a for hp in every_hp for a in alphas(hp))
        self.layer_specs = layer_loss_specs(job.spec.losses)
        self.exports: list[str] = list(job.spec.export)
        self.work_dir: Path | None = None  # where a Hugging Face teacher is unpacked
        # Per phase, one entry per finished epoch (the model card's curves); checkpointed.
        self.history: dict[str, list[dict]] = {"student": [], "baseline": []}

    # -- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        hp = self.hp
        onnx_export.check_available(self.exports)  # before anything slow
        self.device = self.gang.device if self.gang else torch_device(self.job.device)
        self.autocast_dtype = autocast_dtype(hp.precision, self.device)
        text = self.job.teacher_format == "hf_archive"
        if text:  # its data is read with its tokenizer, so it comes first
            self.teacher = self._load_text_teacher()
        self.train_data, self.val_data = self._load_data()
        preflight.check_requirements(self.spec, self.train_data, self.val_data)
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
            self.log(self.plan.note)
        sample = self.train_data.x[: hp.batch_size]
        student = preflight.check_student(self.plan, sample, self.num_classes)
        # The job's warnings, once: a job that left a checkpoint has given them already.
        if not self.job.checkpoint_path.exists():
            split = None if self.job.validation_path else self.spec.data.validation_split
            params = self.teacher.num_params, count_parameters(student)
            for warning in job_warnings.at_setup(*params, split):
                self.log(warning.message, warning.data, level="warning")
        self.sample_features: tuple[Features, Features] | None = None
        if self.layer_specs:
            *features, pairing = preflight.check_layer_losses(
                self.layer_specs, self.teacher, student, sample
            )
            self.sample_features = (features[0], features[1])
            self.log("Layer matching: " + "; ".join(pairing) + ".")
        # The teacher is frozen, so its validation logits never change: compute them once.
        self.val_teacher_logits = self._once(
            lambda: predict(self.teacher, self.val_data.x, hp.batch_size)
        )
        self.teacher_outputs = self._shared_teacher_outputs()
        self.train_size = len(self.train_data)
        self.batches_per_epoch = math.ceil(self.train_size / hp.batch_size)
        # A step is an optimizer step; an epoch's last one may take fewer batches.
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / hp.grad_accumulation_steps)
        self.clock = ProgressClock(
            self.callbacks,
            self.job.progress_interval,
            self.steps_per_epoch,
            hp.epochs,
            self.phases,
            runs=len(self.sweep or [self.hp]),
        )
        self.log(
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

    def _once(self, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()``; on several ranks, rank 0's, computed there once."""
        if self.gang is None:
            return compute()
        result = self.gang.from_leader(compute() if self.gang.leader else None)
        assert result is not None
        return result

    def _shared_teacher_outputs(self) -> TeacherOutputs:
        """The teacher's outputs; on several ranks, rank 0's table (computed or read from the
        cache there), which every rank looks its batches' rows up in."""
        if self.gang is None or self.gang.leader:
            outputs = self._teacher_outputs()
            if self.gang is not None:
                self.gang.from_leader(outputs.table)
            return outputs
        return TeacherOutputs(self.teacher, self.gang.from_leader(None), "off")

    def _teacher_outputs(self) -> TeacherOutputs:
        """The teacher's logits on the training rows, once for the whole job, when that is sound:
        every epoch shows it the same rows (no augmentation) and the loss uses them. Layer
        matching needs the teacher's layers on every batch, so it runs the teacher live."""
        job, teacher = self.job, self.teacher
        if self.layer_specs:
            return TeacherOutputs(teacher, None, "off")
        if not (job.teacher_cache and self.largest_alpha > 0):
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
            lambda level, message: self.log(message, level=level),
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
        """The student (one per combination in a sweep), then the optional baseline."""
        checkpoint = self._load_checkpoint()
        if checkpoint is not None:
            self.history = checkpoint.history
        self.runs: dict[Phase, TrainingRun] = {}
        self.sweep_state: SweepState | None = None
        for phase in self.phases:
            if phase == "student" and self.sweep is not None:
                self.runs[phase] = train_sweep(self, self.sweep, checkpoint)
                continue
            self.runs[phase] = self.start_run(phase, checkpoint)
            self.train_run(self.runs[phase])

    def train_run(self, run: TrainingRun) -> None:
        """Train ``run`` from where it stands to its last epoch (or until early stopping), reading
        the data in a seeded order per epoch, so that a run resumed mid-epoch sees the very same
        batches. With early stopping, the run ends on its best epoch's weights."""
        hp, last_step = self.hp, self.steps_per_epoch - 1
        run.model.train()
        run.started = time.monotonic()
        self.clock.begin(run.phase, run.step)
        while run.epoch < hp.epochs and not run.stopped_early:
            order = epoch_order(self.train_size, hp.seed, run.epoch).to(self.device)
            for i in range(run.step - run.epoch * self.steps_per_epoch, self.steps_per_epoch):
                self._optimizer_step(run, order, i)
                if i < last_step and self._agree(self.clock.due()):
                    losses = self._flush(run)
                    self._report(run, losses)
                    if self._agree(self.callbacks.should_stop()):
                        self._save_checkpoint(run)
                        self._cancel(run)
            run.epoch += 1
            losses = self._flush(run)  # checked before a broken state is saved
            val = self.validate(run)
            self._record_epoch(run, run.meter.epoch_mean(), val)
            if run.stopper is not None:
                self._watch(run, run.stopper, val)
            self._save_checkpoint(run)
            done = {"phase": run.phase, "epoch": run.epoch, "epochs": hp.epochs}
            self.log(f"{run.phase.capitalize()} epoch {run.epoch}/{hp.epochs} done.", done | val)
            self._report(run, losses, val)
            if self._agree(self.callbacks.should_stop()):
                self._cancel(run)
        run.restore_best()
        run.seconds, run.started = run.train_seconds(), None

    def _agree(self, decision: bool) -> bool:
        """``decision``; on several ranks, rank 0's (its clock, its stop request) on every rank."""
        return decision if self.gang is None else self.gang.agree(decision)

    def _flush(self, run: TrainingRun) -> dict[str, float | None]:
        """The mean losses since the last flush (over every rank's batches), checked."""
        if self.gang is not None:
            run.meter.combine(self.gang.sum)
        losses = run.meter.flush()
        _check_finite(losses)
        return losses

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
            index, share = order[b * hp.batch_size : (b + 1) * hp.batch_size], 1.0
            if self.gang is not None:
                index, share = self.gang.share(index)
            loss = self._loss(run, index)
            total = loss.total if len(batches) == 1 else loss.total / len(batches)
            if share != 1.0:
                total = total * share
            (total if run.scaler is None else run.scaler.scale(total)).backward()
            if share > 0:
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
        student = run.model if run.wrapper is None else run.wrapper
        if self.autocast_dtype is None:
            student_logits = student(x)
        else:  # the loss casts the logits to float32 before its softmax
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                student_logits = student(x)
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

    def _record_epoch(self, run: TrainingRun, train_loss: float | None, val: dict) -> None:
        entry = {"epoch": run.epoch, "train_loss": train_loss, **val}
        if self.sweep is not None and run.phase == "student":
            entry["run"] = self.clock.run
        self.history[run.phase].append(entry)

    def _watch(self, run: TrainingRun, stopper: EarlyStopping, val: dict) -> None:
        value = val[stopper.metric]
        if value is None:  # setup's checks make this unreachable; say so rather than guess
            raise LabelsRequired(
                f"Early stopping on {stopper.metric} needs labelled validation data."
            )
        if stopper.update(run.epoch, value):
            run.keep_best()
        if stopper.should_stop and run.epoch < self.hp.epochs:
            stopper.stopped_early = True
            self.log(
                f"Stopping the {run.phase} early: {stopper.metric} has not improved for "
                f"{stopper.patience} epochs; keeping epoch {stopper.best_epoch}'s weights."
            )

    def validate(self, run: TrainingRun) -> dict:
        outputs = predict(run.model, self.val_data.x, self.hp.batch_size)
        if self.gang is not None:
            self.gang.resharded(run.model)
        return self.task.validate(
            outputs, self.val_teacher_logits, self.val_data.y, run.temperature, run.alpha
        )

    def sweep_row(self, run: TrainingRun) -> dict:
        """What a finished sweep run is judged on (the task's ``better`` ranks the rows)."""
        outputs = predict(run.model, self.val_data.x, self.hp.batch_size)
        return self.task.sweep_row(self.validate(run), outputs, self.val_teacher_logits)

    def _report(self, run: TrainingRun, losses: dict, val: dict | None = None) -> None:
        """Send progress and, for the student, a metric point."""
        points = []
        if run.phase == "student":
            learning_rate = run.optimizer.param_groups[0]["lr"]
            epoch = math.ceil(run.step / self.steps_per_epoch)
            step = self.clock.job_step(run.phase, run.step)
            point = {"step": step, "epoch": epoch, **losses, "learning_rate": learning_rate}
            if self.sweep is not None:
                point["run"] = self.clock.run
            points.append(point | (val or {}))
        self.clock.send(run.phase, run.step, points)

    def _cancel(self, run: TrainingRun) -> NoReturn:
        self.log(f"Cancelled at step {run.step}; the checkpoint is saved.")
        raise JobCancelled(f"Cancelled at {run.phase} step {run.step}.")

    # -- runs and checkpoints -------------------------------------------------------------------

    def start_run(
        self, phase: Phase, checkpoint: TrainingState | None, settings: SweepRun | None = None
    ) -> TrainingRun:
        """A fresh run from the seed, or the run as the checkpoint left it; ``settings`` are a
        sweep run's (the spec's hyperparameters and loss by default)."""
        hp = settings.hp if settings is not None else self.hp
        torch.manual_seed(hp.seed)  # the student and the baseline start from the same weights
        model = self.plan.build().to(self.device)
        wrapper = self.gang.wrap(model) if self.gang is not None else None  # before the optimizer
        matching = None
        if phase == "student" and self.sample_features is not None:
            matching = LayerMatching(self.layer_specs, *self.sample_features).to(self.device)
        trained = model if matching is None else nn.ModuleList([model, matching])
        run = TrainingRun(phase, model, make_optimizer(trained, hp), self._schedules(phase, hp))
        run.matching, run.wrapper = matching, wrapper
        run.logits = settings.logits if settings is not None else None
        if hp.early_stopping is not None:
            rule = hp.early_stopping
            run.stopper = EarlyStopping(rule.metric, rule.patience, rule.min_delta)
        if self.autocast_dtype == torch.float16:
            run.scaler = torch.amp.GradScaler(self.device.type)
        if checkpoint is None or phase not in checkpoint.models:
            return run
        model.load_state_dict(checkpoint.models[phase])
        if matching is not None and checkpoint.matching is not None:
            matching.load_state_dict(checkpoint.matching)
        run.seconds = checkpoint.train_seconds[phase]
        if run.stopper is not None:
            run.stopper.load_state_dict(checkpoint.early_stopping[phase])
        if checkpoint.phase == phase:  # this training was under way
            if self.gang is None:
                run.optimizer.load_state_dict(checkpoint.optimizer)
            else:
                sharded_checkpoint.load_optimizer(run, checkpoint.optimizer)
            run.epoch, run.step = checkpoint.epoch, checkpoint.step
            if run.scaler is not None and checkpoint.scaler is not None:
                run.scaler.load_state_dict(checkpoint.scaler)
            run.best_weights = checkpoint.best_weights
            if run.stopper is not None and _best_is_latest(run.stopper, run.epoch):
                run.keep_best()  # saved once, as the model
            torch.set_rng_state(checkpoint.rng)
            if checkpoint.cuda_rng is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(checkpoint.cuda_rng, self.device)
        else:  # the student had finished before the baseline began
            run.epoch, run.step = hp.epochs, hp.epochs * self.steps_per_epoch
        self.log(f"Resumed the {phase} at epoch {run.epoch}, step {run.step}.")
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
        best = run.best_weights
        if run.stopper is not None and _best_is_latest(run.stopper, run.epoch):
            best = None  # the model itself: saved once
        state = TrainingState(
            spec=_training_spec(self.spec),
            phase=run.phase,
            epoch=run.epoch,
            step=run.step,
            optimizer=self._optimizer_state(run),
            rng=torch.get_rng_state(),
            models={p: r.model.state_dict() for p, r in self.runs.items()},
            train_seconds={p: r.train_seconds() for p, r in self.runs.items()},
            history=self.history,
            early_stopping={
                p: r.stopper.state_dict() for p, r in self.runs.items() if r.stopper is not None
            },
            best_weights=best,
            matching=None if run.matching is None else run.matching.state_dict(),
            scaler=None if run.scaler is None else run.scaler.state_dict(),
            cuda_rng=torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        )
        if self.sweep_state is not None:
            state.sweep = self.sweep_state.state_dict()
            state.sweep_run = self.clock.run if run.phase == "student" else None
        if self.gang is None:
            save_checkpoint(self.job.checkpoint_path, state)
        else:
            sharded_checkpoint.save(self.job.checkpoint_path, state, self.gang)
        if self.gang is None or self.gang.leader:
            self.callbacks.on_checkpoint(self.job.checkpoint_path)

    def _fresh_student(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        """A student and its optimizer, sharded as a run's are: what a sharded checkpoint's
        tensors are read into."""
        assert self.gang is not None
        model = self.gang.shard(self.plan.build().to(self.device))
        return model, make_optimizer(model, self.hp)

    def _optimizer_state(self, run: TrainingRun) -> dict:
        if self.gang is None:
            return run.optimizer.state_dict()
        return sharded_checkpoint.optimizer_state(run)

    def _load_checkpoint(self) -> TrainingState | None:
        world_size = self.gang.world_size if self.gang is not None else 1
        sharded_checkpoint.check_world_size(self.job.checkpoint_path, world_size)
        try:
            if self.gang is None:
                checkpoint = load_checkpoint(self.job.checkpoint_path)
            else:
                checkpoint = sharded_checkpoint.load(
                    self.job.checkpoint_path, self.gang, self._fresh_student
                )
        except Exception as e:  # a checkpoint is a cache: losing it costs time, not the job
            self.log(f"Ignoring an unreadable checkpoint: {e}", level="warning")
            return None
        if checkpoint is None:
            return None
        if checkpoint.spec != _training_spec(self.spec):
            self.log("Ignoring a checkpoint made for a different job spec.", level="warning")
            return None
        return checkpoint

    # -- finish ---------------------------------------------------------------------------------

    def unshard(self) -> None:
        """On several ranks, after training: every run's model whole and plain on every rank,
        so that rank 0 finishes the job alone (collective)."""
        assert self.gang is not None
        for run in self.runs.values():
            run.model, run.wrapper = self.gang.whole(run.model, self.plan.build), None

    def finish(self) -> EngineResult:
        return write_results(self)

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

    def log(self, message: str, data: dict | None = None, level: str = "info") -> None:
        self.callbacks.on_log(level, message, data)


def _training_spec(spec: JobSpec) -> dict:
    """The parts of a spec that shape training; its name, priority and webhook do not."""
    return spec.model_dump(mode="json", exclude={"name", "priority", "webhook_url"})


def _arch(arch: BaseModel | None) -> dict | None:
    """An arch as ``build_model`` and ``student.json`` take it: a plain dict."""
    return None if arch is None else arch.model_dump()


def _check_finite(losses: dict[str, float | None]) -> None:
    if not all(v is None or math.isfinite(v) for v in losses.values()):
        raise TrainingDiverged(
            "The training loss became NaN or infinite; lower learning_rate, or check the "
            "data's scale."
        )


def _best_is_latest(stopper: EarlyStopping, epoch: int) -> bool:
    """Whether early stopping's best epoch is the one just finished: the model holds its
    weights, so the checkpoint need not hold them twice."""
    return stopper.best is not None and stopper.best_epoch == epoch
