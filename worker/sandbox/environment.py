"""The environment a training process gets: an allow-list, never a copy of the worker's.

The worker's environment holds the database URL, the broker URL, the admin key and cloud
credentials. A teacher is code, so none of that may reach it: only what Python, torch and CUDA
need to start, and thread settings. Its HOME and TMPDIR are the job's scratch directory, so it
finds no credential files there (~/.aws, ~/.cache/huggingface/token) and leaves nothing behind.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import worker

ALLOWED = frozenset(
    {
        "PATH", "LANG", "LANGUAGE", "TZ",
        # Python, to import this code
        "PYTHONPATH", "VIRTUAL_ENV",
        # CUDA and torch: which GPU, where its libraries are, how to allocate
        "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_HOME", "CUDA_PATH",
        "CUDA_MODULE_LOADING", "LD_LIBRARY_PATH", "PYTORCH_CUDA_ALLOC_CONF",
        # thread pools
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
        "TOKENIZERS_PARALLELISM",
    }
)  # fmt: skip

# This checkout's root: the child must import the code the worker runs, which is not always the
# installed copy (an editable install elsewhere, a PYTHONPATH).
CODE_ROOT = Path(worker.__file__).resolve().parent.parent


def child_environment(parent: Mapping[str, str], scratch: Path) -> dict[str, str]:
    """The training process's environment, from the worker's ``parent``; ``scratch`` is the
    job's private directory (HOME and TMPDIR go under it, and are created)."""
    env = {k: v for k, v in parent.items() if k in ALLOWED or k.startswith("LC_")}
    home, tmp = scratch / "home", scratch / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    python_path = [str(CODE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        PYTHONPATH=os.pathsep.join(python_path),
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",  # a job may not write into the worker's code
        # Nothing is downloaded: a Hugging Face teacher comes whole in its archive.
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    return env
