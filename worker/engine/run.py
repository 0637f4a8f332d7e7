"""``run_job``: the engine's one entry point."""

from typing import TYPE_CHECKING

import torch

from worker.engine.errors import OutOfMemory, is_out_of_memory
from worker.engine.job import Callbacks, EngineJob, EngineResult, NullCallbacks
from worker.engine.recipe import DistillationRecipe

if TYPE_CHECKING:
    from worker.engine.distributed import Gang


def _recipe(job: EngineJob, callbacks: Callbacks, gang: "Gang | None") -> DistillationRecipe:
    if job.spec.task == "causal_lm":
        from worker.engine.lm.recipe import LanguageModelRecipe

        return LanguageModelRecipe(job, callbacks)
    return DistillationRecipe(job, callbacks, gang)


def run_job(job: EngineJob, callbacks: Callbacks | None = None) -> EngineResult:
    """Distil ``job``'s teacher into its student, writing artifacts to ``job.output_dir``; on
    ``job.world_size`` ranks when that is more than 1 (this process is rank 0).

    Raises an ``EngineError`` subclass for anything the user can fix, and ``JobCancelled`` (after
    checkpointing) when ``callbacks.should_stop()`` says so.
    """
    callbacks = callbacks or NullCallbacks()
    if job.world_size > 1:
        from worker.engine.distributed import run_gang

        return run_gang(job, callbacks, run_recipe)
    result = run_recipe(job, callbacks)
    assert result is not None
    return result


def run_recipe(
    job: EngineJob, callbacks: Callbacks, gang: "Gang | None" = None
) -> EngineResult | None:
    """The recipe, on this process's rank of ``gang`` if any: every rank trains, rank 0 alone
    finishes (None on the others)."""
    recipe = _recipe(job, callbacks, gang)
    try:
        recipe.setup()
        recipe.train()
        if gang is None:
            return recipe.finish()
        recipe.unshard()
        return recipe.finish() if gang.leader else None
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
