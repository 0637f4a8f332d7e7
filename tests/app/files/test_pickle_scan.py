"""The static pickle scanner: real torch pickles pass, every way of reaching a dangerous global
is reported, and damaged input is told apart from dangerous input. Nothing here is unpickled."""

import io
import os
import pickle
import subprocess
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from app.files.pickle_scan import (
    UNRESOLVABLE_CALL,
    UNRESOLVABLE_GLOBAL,
    PickleMalformed,
    scan_pickle,
)
from file_rules.pickles import torchscript_allowed, weights_only_allowed


@pytest.fixture
def marker(tmp_path: Path):
    """A file that any of the payloads below would create if it were ever executed."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload ran"


def _reduces_to(func, *args):
    class Payload:
        def __reduce__(self):
            return (func, args)

    return Payload()


def _member(data: bytes, suffix: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(suffix)]
        return zf.read(name)


def _torch_pickle(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return _member(buffer.getvalue(), "/data.pkl")


def _state_dict() -> dict:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    return model.state_dict()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_state_dicts_are_clean(protocol: int) -> None:
    data = _torch_pickle(_state_dict(), pickle_protocol=protocol)
    assert scan_pickle(data, allowed=weights_only_allowed) == []


def test_checkpoint_with_plain_python_values_is_clean() -> None:
    checkpoint = {
        "model": _state_dict(),
        "epoch": 3,
        "names": ["a", "b"],
        "config": {"lr": 1e-3, "betas": (0.9, 0.99), "tags": {1, 2}},
        "blob": b"bytes",
        "z": 1 + 2j,
        "dtype": torch.float16,
        "device": torch.device("cpu"),
        "param": nn.Parameter(torch.ones(2)),
    }
    assert scan_pickle(_torch_pickle(checkpoint), allowed=weights_only_allowed) == []


def test_torchscript_pickles_need_the_torchscript_allowlist() -> None:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(4, 2), nn.ReLU())), buffer)
    data_pkl = _member(buffer.getvalue(), "/data.pkl")
    assert scan_pickle(data_pkl, allowed=torchscript_allowed) == []
    offenders = scan_pickle(data_pkl, allowed=weights_only_allowed)
    assert offenders and all(o.startswith("__torch__.") for o in offenders)


def test_a_pickled_module_is_refused() -> None:
    offenders = scan_pickle(_torch_pickle(nn.Linear(2, 2)), allowed=weights_only_allowed)
    assert "torch.nn.modules.linear.Linear" in offenders


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (os.system, "posix.system"),
        (exec, "builtins.exec"),
        (eval, "builtins.eval"),
        (subprocess.Popen, "subprocess.Popen"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_reduce_payloads_are_reported(marker: Path, func, expected: str, protocol: int) -> None:
    data = pickle.dumps({"w": _reduces_to(func, f"touch {marker}")}, protocol=protocol)
    assert scan_pickle(data, allowed=weights_only_allowed) == [expected]


def test_payload_inside_torch_save_is_reported(marker: Path) -> None:
    data = _torch_pickle({"w": _reduces_to(os.system, f"touch {marker}")})
    assert scan_pickle(data, allowed=weights_only_allowed) == ["posix.system"]


def test_protocol_0_global_written_by_hand(marker: Path) -> None:
    data = f"cos\nsystem\n(Vtouch {marker}\ntR.".encode()
    assert scan_pickle(data, allowed=weights_only_allowed) == ["os.system"]


def test_python2_names_are_judged_by_what_they_load() -> None:
    # torch.save itself writes builtins.set as "__builtin__ set"; eval stays eval.
    assert scan_pickle(b"\x80\x02c__builtin__\nset\n)\x85R.", allowed=weights_only_allowed) == []
    evil = b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R."
    assert scan_pickle(evil, allowed=weights_only_allowed) == ["builtins.eval"]


def test_stack_global_through_the_memo(marker: Path) -> None:
    # "posix" and "system" are memoized, popped, then fetched back with BINGET for STACK_GLOBAL.
    command = f"touch {marker}".encode()
    data = (
        b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94" + b"00"
        b"h\x00h\x01\x93" + b"\x8c" + bytes([len(command)]) + command + b"\x85R."
    )
    assert scan_pickle(data, allowed=weights_only_allowed) == ["posix.system"]


def test_stack_global_with_operands_that_are_not_strings() -> None:
    data = b"\x80\x04K\x01K\x02\x93)R."  # two ints as module and name
    assert UNRESOLVABLE_GLOBAL in scan_pickle(data, allowed=weights_only_allowed)


def test_dotted_names_are_not_allowed_by_prefix() -> None:
    data = b"\x80\x04\x8c\x0bcollections\x8c\x14OrderedDict.__init__\x93."
    assert scan_pickle(data, allowed=weights_only_allowed) == ["collections.OrderedDict.__init__"]


def test_inst_and_obj_opcodes(marker: Path) -> None:
    inst = f"(Vtouch {marker}\nios\nsystem\n.".encode()
    assert scan_pickle(inst, allowed=weights_only_allowed) == ["os.system"]
    obj = f"(cos\nsystem\nVtouch {marker}\no.".encode()
    assert scan_pickle(obj, allowed=weights_only_allowed) == ["os.system"]


def test_extension_registry_codes_are_refused() -> None:
    assert scan_pickle(b"\x80\x02\x82\x01)R.", allowed=weights_only_allowed) == [
        "<extension registry code 1>"
    ]


def test_calling_something_no_global_produced() -> None:
    data = b"\x80\x02}\x94h\x00)R."  # REDUCE on a dict fetched from the memo
    assert scan_pickle(data, allowed=weights_only_allowed) == [UNRESOLVABLE_CALL]


def test_state_written_onto_a_class_is_refused() -> None:
    # BUILD with (None, {"__eq__": None}) sets an attribute on the OrderedDict class itself.
    data = b"\x80\x02ccollections\nOrderedDict\nN}X\x06\x00\x00\x00__eq__Ns\x86b."
    assert scan_pickle(data, allowed=weights_only_allowed) == [
        "<state written onto collections.OrderedDict>"
    ]


def test_every_pickle_in_a_row_is_scanned(marker: Path) -> None:
    clean = pickle.dumps([1, 2], protocol=2)
    evil = pickle.dumps(_reduces_to(os.system, f"touch {marker}"), protocol=2)
    assert scan_pickle(clean + evil, allowed=weights_only_allowed) == ["posix.system"]
    assert scan_pickle(clean + evil, allowed=weights_only_allowed, max_pickles=1) == []


def test_legacy_torch_save_is_five_pickles_then_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(_state_dict(), path, _use_new_zipfile_serialization=False)
    with path.open("rb") as f:
        assert scan_pickle(f, allowed=weights_only_allowed, max_pickles=5) == []


def test_truncated_pickle_is_malformed() -> None:
    data = pickle.dumps({"a": [1, 2, 3]}, protocol=2)
    with pytest.raises(PickleMalformed):
        scan_pickle(data[:-4], allowed=weights_only_allowed)
    with pytest.raises(PickleMalformed):
        scan_pickle(b"", allowed=weights_only_allowed)
    with pytest.raises(PickleMalformed):
        scan_pickle(b"\x80\x02" + b"\xff" * 64, allowed=weights_only_allowed)


def test_damage_after_a_dangerous_call_still_reports_it(marker: Path) -> None:
    # An unpickler runs the REDUCE before it reaches the damage, so the call must not hide.
    data = pickle.dumps(_reduces_to(os.system, f"touch {marker}"), protocol=2)
    assert scan_pickle(data[:-1], allowed=weights_only_allowed) == ["posix.system"]


def test_partial_reports_can_be_turned_off(marker: Path) -> None:
    data = pickle.dumps(_reduces_to(os.system, f"touch {marker}"), protocol=2)
    with pytest.raises(PickleMalformed):
        scan_pickle(data[:-1], allowed=weights_only_allowed, report_partial=False)


def test_stack_underflow_is_malformed() -> None:
    with pytest.raises(PickleMalformed):
        scan_pickle(b"\x80\x02R.", allowed=weights_only_allowed)
    with pytest.raises(PickleMalformed):
        scan_pickle(b"\x80\x02h\x05.", allowed=weights_only_allowed)  # memo never written


def test_huge_records_are_refused_without_reading_them() -> None:
    data = b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little")  # BINBYTES8 of a terabyte
    with pytest.raises(PickleMalformed):
        scan_pickle(data, allowed=weights_only_allowed)


def test_endless_pickles_are_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.files import limits, pickle_scan

    with limits.checking(limits.Limits(pickle_opcodes=1000)), pytest.raises(limits.OverBudget):
        scan_pickle(b"\x80\x02" + b"N0" * 1000 + b"N.", allowed=weights_only_allowed)
    monkeypatch.setattr(pickle_scan, "MAX_MEMO", 10)
    with pytest.raises(PickleMalformed, match="memoizes"):
        scan_pickle(b"\x80\x04" + b"N\x94" * 20 + b".", allowed=weights_only_allowed)


def test_allowlist_matches_torch() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    from file_rules.pickles import WEIGHTS_ONLY_GLOBALS

    assert set(_get_allowed_globals()) == WEIGHTS_ONLY_GLOBALS


def test_ordered_dict_state_dict_from_pickle_module_is_clean() -> None:
    data = pickle.dumps(OrderedDict(a=1), protocol=2)
    assert scan_pickle(data, allowed=weights_only_allowed) == []
