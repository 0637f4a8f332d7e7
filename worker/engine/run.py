"""``run_job``: the engine's one entry point."""

import torch

from worker.engine.errors import OutOfMemory, is_out_of_memory
from worker.engine.job import Callbacks, EngineJob, EngineResult, NullCallbacks
from worker.engine.recipe import DistillationRecipe


def _recipe(job: EngineJob, callbacks: Callbacks) -> DistillationRecipe:
    if job.spec.task == "causal_lm":
        from worker.engine.lm.recipe import LanguageModelRecipe

        return LanguageModelRecipe(job, callbacks)
    return DistillationRecipe(job, callbacks)


def run_job(job: EngineJob, callbacks: Callbacks | None = None) -> EngineResult:
    """Distil ``job``'s teacher into its student, writing artifacts to ``job.output_dir``.

    Raises an ``EngineError`` subclass for anything the user can fix, and ``JobCancelled`` (after
    checkpointing) when ``callbacks.should_stop()`` says so.
    """
    recipe = _recipe(job, callbacks or NullCallbacks())
    try:
        recipe.setup()
        recipe.train()
        return recipe.finish()
    except torch.cuda.OutOfMemoryError as e:
        raise OutOfMemory(
            "The GPU ran out of memory; lower batch_size, use a smaller student, or use less "
            "data (the data set is held on the GPU)."
        ) from e
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise OutOfMemory(
            "The worker ran out of memory; lower batch_size, or use less data or a smaller model."
        ) from e
    finally:
        recipe.cleanup()
