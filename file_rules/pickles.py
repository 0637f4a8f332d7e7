"""Which globals a pickle may name: what ``torch.load(weights_only=True)`` accepts, and what
TorchScript archives add. The API's pickle scan (app/files/pickle_scan.py) refuses every upload
whose pickles name anything else; the worker loads pickles only through those same torch loaders.

Standard library only, like the rest of file_rules: the lists are written out because the API
process must not import torch to ask it (tests compare them with torch's own).
"""

from collections.abc import Callable

# Pickled weights or training state in a model folder: loading them can run code, and
# transformers would load them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# A rule: may a pickle name ``module.name``?
Allowed = Callable[[str, str], bool]

_SCALARS = ("BFloat16", "Bool", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short")
_EXTRA_STORAGES = ("ComplexDouble", "ComplexFloat")
_QUANTIZED_STORAGES = ("QInt32", "QInt8", "QUInt2x4", "QUInt4x2", "QUInt8")
_DTYPES = (  # noqa: SIM905 - a word list reads better than 46 quoted strings
    "bfloat16 bits16 bits1x8 bits2x4 bits4x2 bits8 bool complex128 complex32 complex64 float16 "
    "float32 float4_e2m1fn_x2 float64 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz "
    "float8_e8m0fnu int1 int16 int2 int3 int32 int4 int5 int6 int64 int7 int8 qint32 qint8 "
    "quint2x4 quint4x2 quint8 uint1 uint16 uint2 uint3 uint32 uint4 uint5 uint6 uint64 uint7 uint8"
).split()
_QSCHEMES = (  # noqa: SIM905
    "per_channel_affine per_channel_affine_float_qparams per_channel_symmetric "
    "per_tensor_affine per_tensor_symmetric"
).split()
_REBUILD_FUNCTIONS = (  # noqa: SIM905
    "_rebuild_device_tensor_from_cpu_tensor _rebuild_device_tensor_from_numpy "
    "_rebuild_meta_tensor_no_storage _rebuild_nested_tensor _rebuild_parameter "
    "_rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor _rebuild_tensor "
    "_rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_wrapper_subclass"
).split()


def _weights_only_globals() -> frozenset[str]:
    # The same names torch._weights_only_unpickler._get_allowed_globals() returns in torch 2.13;
    # written out because the API process must not import torch to ask it.
    names = {
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.set",
        "collections.Counter",
        "collections.OrderedDict",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch._tensor._rebuild_from_type_v2",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
    }
    names.update(f"torch.{d}" for d in _DTYPES + _QSCHEMES)
    names.update(f"torch._utils.{f}" for f in _REBUILD_FUNCTIONS)
    for prefix in ("torch", "torch.cuda"):
        names.update(f"{prefix}.{s}Storage" for s in _SCALARS + _EXTRA_STORAGES)
        names.update(f"{prefix}.{s}Tensor" for s in _SCALARS)
    names.update(f"torch.{s}Storage" for s in _QUANTIZED_STORAGES)
    for prefix in ("torch.sparse", "torch.cuda.sparse"):
        names.update(f"{prefix}.{s}Tensor" for s in _SCALARS if s != "Bool")
    return frozenset(names)


WEIGHTS_ONLY_GLOBALS = _weights_only_globals()

# Helpers that torch.jit.save writes into data.pkl / constants.pkl / *.debug_pkl; TorchScript's
# C++ unpickler maps them to list and tensor builders (torch/jit/_pickle.py holds the Python twins).
_TORCHSCRIPT_PICKLE_HELPERS = frozenset(
    f"torch.jit._pickle.{name}"
    for name in (
        "build_boollist",
        "build_doublelist",
        "build_intlist",
        "build_tensor_from_id",
        "build_tensorlist",
        "restore_type_tag",
    )
)


def weights_only_allowed(module: str, name: str) -> bool:
    """What ``torch.load(weights_only=True)`` accepts: tensors, storages, dtypes, containers."""
    return f"{module}.{name}" in WEIGHTS_ONLY_GLOBALS


def torchscript_allowed(module: str, name: str) -> bool:
    """Weights plus what TorchScript archives name: classes compiled from the archive's own
    ``code/`` (module ``__torch__...``, resolved by the TorchScript compiler, not by importing
    Python) and the ``torch.jit._pickle`` list builders."""
    if module == "__torch__" or module.startswith("__torch__."):
        return True
    return (
        f"{module}.{name}" in _TORCHSCRIPT_PICKLE_HELPERS
        or f"{module}.{name}" in WEIGHTS_ONLY_GLOBALS
    )
