"""Language models (causal LMs): the teacher's signal, the losses over a large vocabulary, and the
models themselves. Being built; not yet reachable from a job (docs/api.md, "Not served yet")."""
