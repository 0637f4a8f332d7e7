"""Each training run in a child process of its own (``python -m worker.sandbox``).

A teacher is code: TorchScript and ``.pt2`` archives run when loaded. In a child, whatever it
does (a crash in native code, an allocation bomb, a hang) costs that one job, not the Celery
worker, and the child's exit releases its GPU memory. The child sees none of the worker's
secrets: it gets an environment built from an allow-list, and its job in one message on stdin.

- ``process``: the parent side, ``TrainingProcess``, used by ``worker/runner.py``
- ``__main__``: the child, which runs ``worker.engine.run_job``
- ``protocol``: the JSON lines between the two
- ``environment``: what the child may see of the worker's environment

``__main__`` imports torch only after it has applied its limits, so they bound torch too.
"""
