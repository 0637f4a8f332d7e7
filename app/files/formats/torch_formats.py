"""torch.save and torch.jit.save zips: every pickle in them may reference only what the
matching loader allows, and TorchScript code may call only operators that compute."""

import zipfile

from app.files.formats.accepted import Detected
from app.files.formats.archives import files
from app.files.formats.errors import STATE_DICT_ADVICE, TORCHSCRIPT_ADVICE
from app.files.formats.pickles import scan_zip, torch_zip_rules
from app.files.formats.torchscript_code import check_torchscript_code
from file_rules.pickles import torchscript_allowed, weights_only_allowed


def detect_torch_zip(zf: zipfile.ZipFile, root: str, names: list[str]) -> Detected:
    """A zip whose one folder holds data.pkl: TorchScript if it carries code, else a state_dict."""
    if any(n.startswith(f"{root}/code/") for n in names):
        fmt, rules = "torchscript", torch_zip_rules(torchscript_allowed, TORCHSCRIPT_ADVICE)
    else:
        fmt, rules = "state_dict", torch_zip_rules(weights_only_allowed, STATE_DICT_ADVICE)
    scan_zip(zf, rules, "", depth=0)
    if fmt == "torchscript":
        check_torchscript_code(zf, [i for i in files(zf.infolist()) if i.filename.endswith(".py")])
    storages = [i for i in files(zf.infolist()) if rules.raw(i.filename)]
    return Detected(fmt, storage_meta(storages))


def storage_meta(storages: list[zipfile.ZipInfo]) -> dict:
    return {"storages": len(storages), "storage_bytes": sum(i.file_size for i in storages)}
