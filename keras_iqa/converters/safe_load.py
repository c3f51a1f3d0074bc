"""Reading checkpoints without running code from them: `load_state_dict(path)` -> {name: numpy array}.

A PyTorch checkpoint is a pickle. Unpickling may call any importable function the file names (`os.system`, a class's
`__reduce__`), so an untrusted file can run code the moment it is opened. keras-iqa therefore reads checkpoints only with
`torch.load(weights_only=True)`: PyTorch's restricted unpickler, which rebuilds tensors and plain containers (dict, list,
OrderedDict, numbers, strings) and refuses every other global. `.safetensors` files hold no code at all and are read with the
`safetensors` package.

A file that needs more than that (a whole `nn.Module` saved with `torch.save(model)`, as MetaIQA's released checkpoints are,
or anything naming other functions or classes) is refused with `UnsafeCheckpointError`, which names what the file would import
and says how to turn it into a plain state dict on a machine you trust with it (docs/converters.md). Nothing is executed to
find out: zip checkpoints are scanned with `torch.serialization.get_unsafe_globals_in_checkpoint`, which reads the pickle's
opcodes without running them, and for the legacy format the restricted unpickler stops at the first global it does not allow.

Example:
>>> import os, tempfile, torch
>>> from keras_iqa.converters.safe_load import load_state_dict
>>> path = os.path.join(tempfile.mkdtemp(), "sd.pt")
>>> torch.save({"state_dict": {"fc.weight": torch.ones(2, 3)}, "epoch": 7}, path)
>>> {k: v.shape for k, v in load_state_dict(path).items()}
{'fc.weight': (2, 3)}
"""

from __future__ import annotations

import hashlib
import json
import os
import pickletools
import re
import shlex
import zipfile
from typing import Mapping

import numpy as np

#: Dict keys under which training scripts commonly nest the state dict; the first that holds a mapping is used.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


class UnsafeCheckpointError(ValueError):
    """The checkpoint can only be opened by running code it names; keras-iqa refuses to (see the module docstring).

    Attributes: `path`, `globals_needed` (what unpickling would import), `recipe` (a shell command that turns the file into
    a plain state dict, for a machine trusted with the file), `state_dict_path` (the file that command writes).
    """

    def __init__(self, path, globals_needed):
        # classes pickled from a script first (what a user must provide), then the rest alphabetically
        self.path = str(path)
        self.globals_needed = sorted(dict.fromkeys(globals_needed), key=lambda g: (not g.startswith("__main__."), g))
        self.state_dict_path = os.path.splitext(self.path)[0] + ".state_dict.pt"
        self.recipe = state_dict_recipe(self.path, self.state_dict_path, self.globals_needed)
        names = ", ".join(self.globals_needed[:8]) + (" ..." if len(self.globals_needed) > 8 else "")
        super().__init__(
            f"refusing to open {self.path}: it is not plain tensors but a pickled Python object, and unpickling it would "
            f"import and call {names}. Opening an untrusted checkpoint that way can run any code, so keras-iqa reads "
            "checkpoints with torch.load(weights_only=True) only. A whole model saved with torch.save(model) (MetaIQA's "
            "released .pt files are) needs this. Turn it into a plain state dict once, on a machine you trust with the "
            "file (ideally a throwaway container without network, with torch and the libraries it names installed, e.g. "
            "torchvision), then convert that file (docs/converters.md):\n"
            f"    {self.recipe}")


def state_dict_recipe(path: str, out: str, globals_needed=()) -> str:
    """The shell one-liner that loads a pickled model with full unpickling and saves its `state_dict()` to `out`.

    Classes pickled from a script (`__main__.<Name>`, as the official MetaIQA scripts saved `Net` and `BaselineModel1`)
    get empty `nn.Module` stand-ins: unpickling restores a module's parameters and submodules without its class's code.
    It still runs whatever the file names, so it belongs on a machine trusted with the file, never in keras-iqa.
    """
    stubs = [g.split(".", 1)[1] for g in globals_needed if g.startswith("__main__.") and g.split(".", 1)[1].isidentifier()]
    code = "import torch; from torch import nn; " + "".join(f"{n} = type({json.dumps(n)}, (nn.Module,), {{}}); "
                                                              for n in dict.fromkeys(stubs))
    code += (f"m = torch.load({json.dumps(path)}, map_location=\"cpu\", weights_only=False); "
             f"torch.save(m.state_dict(), {json.dumps(out)})")
    return f"python -c {shlex.quote(code)}"


def sha256(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (recorded in converted presets)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def load_state_dict(path) -> dict:
    """Reads a state dict from a PyTorch checkpoint (`.pt` / `.pth` / `.bin`, zip or legacy format) or a `.safetensors` file,
    without executing code from it; returns {name: numpy array} (float tensors as float32, a DataParallel `module.` prefix
    kept: the converters strip it).

    Accepted: a state dict, or a dict holding one under "state_dict" / "model_state_dict" / "model" / "net" / "state"
    (other entries, e.g. an epoch counter or optimizer state, are dropped). Raises `UnsafeCheckpointError` for a file that
    needs code to open, `ValueError` for a file that is not a readable checkpoint or holds no tensors, `FileNotFoundError`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    try:
        import torch
    except ImportError as e:
        raise RuntimeError("reading PyTorch checkpoints needs torch: pip install 'keras-iqa[torch]' (CPU wheel is enough)") from e
    if zipfile.is_zipfile(path):  # the format of torch.save since 1.6: scan its pickle without running it
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # a damaged archive: torch.load below reports it
            unsafe = []
        if unsafe:
            raise UnsafeCheckpointError(path, unsafe)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (restricted unpickler), RuntimeError (zip reader), EOFError, ...
        needed = list(dict.fromkeys(_GLOBAL.findall(str(e))))
        if needed:  # the restricted unpickler names the first global it refused; list them all for the message
            raise UnsafeCheckpointError(path, _legacy_unsafe_globals(path) or needed) from None
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {_last_line(e)}); expected a "
                         "file written by torch.save or a .safetensors file") from None
    return _to_numpy(_state_dict_of(obj, path), path)


def _legacy_unsafe_globals(path: str) -> list:
    """The globals a legacy-format (pre-zip) checkpoint names that PyTorch's restricted unpickler does not allow, read from
    the opcodes of its leading pickles (magic number, protocol, system info, the object) with `pickletools` (nothing is
    executed). Best effort, for the error message only: [] when it cannot tell."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # a private helper of torch: without it the message names what the unpickler reported
        return []
    found = []
    with open(path, "rb") as f:
        for _ in range(4):
            strings = []
            try:
                for op, arg, _pos in pickletools.genops(f):
                    if op.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                    elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                        strings.append(str(arg))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
            except Exception:  # past the pickles (raw storage bytes) or damaged
                break
    found = [("builtins." + g[len("__builtin__."):]) if g.startswith("__builtin__.") else g for g in found]  # protocol 2
    return [g for g in dict.fromkeys(found) if g not in allowed]


def _load_safetensors(path: str) -> dict:
    try:
        from safetensors.numpy import load_file
    except ImportError as e:
        raise RuntimeError("reading .safetensors files needs the safetensors package: pip install safetensors "
                           "(part of keras-iqa[torch])") from e
    try:
        return _to_numpy(load_file(path), path)
    except Exception as e:  # SafetensorError: header or sizes do not fit
        raise ValueError(f"{path} is not a readable .safetensors file ({type(e).__name__}: {_last_line(e)})") from None


def _state_dict_of(obj, path: str) -> Mapping:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of parameter names to tensors)")
    for key in NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            return inner
    return obj


def _to_numpy(sd: Mapping, path: str) -> dict:
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):  # torch.Tensor
            v = v.detach().cpu()
            v = (v.float() if v.is_floating_point() else v).numpy()
        if isinstance(v, np.ndarray):
            out[str(k)] = v.astype(np.float32) if v.dtype.kind == "f" else v
    if not out:
        raise ValueError(f"{path} holds no tensors (keys: {list(sd)[:8]})")
    return out


def _last_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("Check the documentation")]
    return (lines[-1] if lines else type(e).__name__)[:300]
