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
import os
import re
import zipfile
from typing import Mapping

import numpy as np

#: Dict keys under which training scripts commonly nest the state dict; the first that holds a mapping is used.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


class UnsafeCheckpointError(ValueError):
    """The checkpoint can only be opened by running code it names; keras-iqa refuses to (see the module docstring)."""

    def __init__(self, path, globals_needed):
        self.path, self.globals_needed = str(path), list(globals_needed)
        stem = os.path.splitext(os.path.basename(self.path))[0]
        names = ", ".join(self.globals_needed[:8]) + (" ..." if len(self.globals_needed) > 8 else "")
        super().__init__(
            f"refusing to open {self.path}: it is not plain tensors but a pickled Python object, and unpickling it would "
            f"import and call {names}. Opening an untrusted checkpoint that way can run any code, so keras-iqa reads "
            "checkpoints with torch.load(weights_only=True) only. A whole model saved with torch.save(model) (MetaIQA's "
            "released .pt files are) needs this; convert it to a plain state dict once, on a machine you trust with the file "
            "(ideally a throwaway container without network), with the classes it names importable (classes saved from a "
            "script, __main__.<Name>, must be defined in that session; docs/converters.md has the MetaIQA recipe):\n"
            f"    python -c \"import torch; m = torch.load('{self.path}', map_location='cpu', weights_only=False); "
            f"torch.save(m.state_dict(), '{stem}.state_dict.pt')\"\n"
            f"then convert {stem}.state_dict.pt.")


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
        if needed:
            raise UnsafeCheckpointError(path, needed) from None
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {_last_line(e)}); expected a "
                         "file written by torch.save or a .safetensors file") from None
    return _to_numpy(_state_dict_of(obj, path), path)


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
