from tests.worker.engine.conftest import mlp_digits  # noqa: F401  (the session's digits teacher)
