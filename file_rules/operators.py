"""Which PyTorch operators a teacher's code may call: one list for TorchScript code and for
torch.export graphs, checked at upload without running or compiling anything.

An operator namespace must be one torch itself defines for computing (an allow-list: custom or
distributed namespaces such as c10d or symm_mem are refused), and within those the few operators
that reach the file system, the network or Python are refused by name. The worker runs teachers in
an OS sandbox as well; this keeps such teachers out before they are stored.
"""

COMPUTE_NAMESPACES = frozenset(
    {
        "aten",
        "prim",
        "prims",
        "quantized",
        "_quantized",
        "quantization",
        "higher_order",
        "mkldnn",
        "mkldnn_prepacked",
        "mkl",
        "onednn",
        "sparse",
        "rngprims",
        "profiler",
    }
)
# TorchScript custom classes (torch.classes.<namespace>) that quantized and mobile-optimised
# models hold; others (dist_c10d's FileStore and TCPStore, for one) reach files and sockets.
CLASS_NAMESPACES = frozenset({"quantized", "rnn", "xnnpack", "mkldnn", "onednn", "sparse"})
REFUSED_OPERATORS = frozenset(
    {
        "aten::from_file",  # maps any file, shared=True writes it back
        "aten::save",  # writes any file
        "prim::rpc_async",  # remote calls
        "prim::rpc_sync",
        "prim::rpc_remote",
        "prim::PythonOp",  # a Python callable
        "higher_order::triton_kernel_wrapper_mutation",  # compiled kernels
        "higher_order::triton_kernel_wrapper_functional",
        "higher_order::call_torchbind",
        "higher_order::executorch_call_delegate",
    }
)
# TorchScript reaches operators by bare name too (torch.from_file, x.save(...), rpc_async(...)),
# so these names are refused wherever they appear in its code.
REFUSED_NAMES = frozenset(op.split("::")[1] for op in REFUSED_OPERATORS)


def refused_operator(namespace: str, name: str) -> bool:
    """Whether ``namespace::name`` may not appear in a teacher's code."""
    return namespace not in COMPUTE_NAMESPACES or f"{namespace}::{name}" in REFUSED_OPERATORS
