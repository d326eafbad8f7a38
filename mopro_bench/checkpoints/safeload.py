"""Reading a checkpoint file without running code from it.

A pickle can name any importable callable and have it called while loading (``os.system`` via ``__reduce__``), so a
checkpoint is never unpickled with the stock unpickler unless the user says they trust it:

- torch files (zip or legacy) go through ``torch.load(weights_only=True)`` with a short allow-list of harmless globals
  that real checkpoints carry: ``argparse.Namespace`` (DINO, timm ``args``), numpy arrays/scalars/dtypes (MoCo-era
  ``best_acc1``, RNG states), ``pathlib`` paths inside ``args``;
- plain pickles (detectron2 ``.pkl``) go through :class:`RestrictedUnpickler`, which resolves only numpy array
  reconstruction, ``collections.OrderedDict`` and ``_codecs.encode`` (Python 2 pickles) and refuses every other global
  *before* anything is called;
- ``.safetensors`` files are parsed directly (a JSON header and raw bytes, no pickle at all).

``trust=True`` (``--trust-checkpoint``) uses ``torch.load(weights_only=False)`` / ``pickle.load`` instead.

The file is read exactly once: its bytes are read into memory, hashed (``RawCheckpoint.sha256``) and deserialized
from that buffer, so the recorded sha256 is always the hash of the bytes the weights came from, even when the path is
replaced meanwhile (``pretrain`` re-points ``last.pth.tar`` every epoch). The cost is memory: the file's bytes plus
the tensors made from them (about 2x the file size at the peak; checkpoints of the supported ResNets are < 1.6 GB).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pathlib
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mopro_bench.errors import BenchError

ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy (pre-1.6) format starts with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1)
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
TRUST_FIX = "pass --trust-checkpoint only if you trust where the file comes from (loading it can run any code)"


@dataclass
class RawCheckpoint:
    """The unpickled object and how it was read."""

    obj: Any
    container: str  # "torch-zip" | "torch-legacy" | "pickle" | "safetensors"
    trusted: bool  # read without restrictions (--trust-checkpoint)
    sha256: str | None = None  # of exactly the bytes that were deserialized
    size: int | None = None


# ----------------------------------------------------------------------------------------------------------- numpy

def _numpy_multiarray():
    core = getattr(np, "_core", None)
    if core is not None and hasattr(core, "multiarray"):
        return core.multiarray
    return np.core.multiarray  # numpy < 2


def _numpy_dtype_classes() -> list[type]:
    dtypes = getattr(np, "dtypes", None)
    if dtypes is None:
        return []
    return [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and isinstance(getattr(dtypes, n), type)]


def torch_safe_globals() -> list[Any]:
    """Globals allowed on top of ``weights_only``'s own (tensors, dicts, lists, OrderedDict, ...)."""
    ma = _numpy_multiarray()
    allowed: list[Any] = [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath,
                          pathlib.PureWindowsPath, np.ndarray, np.dtype]
    for name in ("_reconstruct", "scalar"):
        fn = getattr(ma, name)
        allowed += [fn, (fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    allowed += _numpy_dtype_classes()
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(f"global {name} is not allowed")
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, scalars and builtin containers; refuses any other global before it is called."""

    _MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg", "numpy.core.multiarray": "multiarray",
                       "numpy._core.multiarray": "multiarray"}

    def find_class(self, module: str, name: str) -> Any:
        mod = self._MODULE_ALIASES.get(module, module)
        if mod == "multiarray" and name in ("_reconstruct", "scalar"):
            return getattr(_numpy_multiarray(), name)
        if mod == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if mod == "numpy.dtypes" and name.endswith("DType") and isinstance(getattr(np.dtypes, name, None), type):
            return getattr(np.dtypes, name)
        if (mod, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if (mod, name) == ("_codecs", "encode"):  # Python 2 pickles of bytes
            import _codecs

            return _codecs.encode
        raise RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a plain pickle")


# ------------------------------------------------------------------------------------------------------ safetensors

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


_ST_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit on the JSON header


def read_safetensors(path: Path, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (8-byte little-endian header size, JSON header, raw little-endian data).

    Every header field is checked before it is used; a crafted or corrupt header is a :class:`BenchError`."""
    if data is None:
        data = path.read_bytes()
    again = "download it again and compare its sha256 with the published one"

    def bad(why: str) -> BenchError:
        return BenchError(f"checkpoint {path} has a corrupt or crafted safetensors header ({why})", again)

    if len(data) < 8:
        raise BenchError(f"checkpoint {path} is truncated ({len(data)} bytes)", "download it again")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _ST_MAX_HEADER and 8 + n > len(data):
        raise BenchError(f"checkpoint {path} is truncated or corrupt (safetensors header says {n} bytes, "
                         f"file has {len(data) - 8})", again)
    if n > _ST_MAX_HEADER:
        raise bad(f"header of {n} bytes, the format allows {_ST_MAX_HEADER}")
    if 8 + n > len(data):
        raise BenchError(f"checkpoint {path} is truncated (safetensors header says {n} bytes, file has {len(data) - 8})",
                         again)
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, RecursionError):
        raise bad("not JSON") from None
    if not isinstance(header, dict):
        raise bad(f"a JSON {type(header).__name__}, not an object")
    body = memoryview(data)[8 + n:]
    out: dict[str, torch.Tensor] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise bad(f"entry {key!r} is a {type(info).__name__}, not an object")
        dtype = _ST_DTYPES.get(info.get("dtype")) if isinstance(info.get("dtype"), str) else None
        if dtype is None:
            raise BenchError(f"checkpoint {path}: tensor {key} has unsupported dtype {info.get('dtype')!r}",
                             "convert the file to float32 (" + "/".join(_ST_DTYPES) + " are read)")
        shape, offs = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise bad(f"tensor {key}: shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int and o >= 0 for o in offs)):
            raise bad(f"tensor {key}: data_offsets {offs!r} is not [begin, end]")
        b, e = offs
        if b > e:
            raise bad(f"tensor {key}: data_offsets [{b}, {e}] end before they begin")
        if e > len(body):
            raise BenchError(f"checkpoint {path} is truncated (tensor {key} ends at byte {e}, data has {len(body)})", again)
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if numel * itemsize != e - b:
            raise bad(f"tensor {key}: shape {shape} of {info['dtype']} needs {numel * itemsize} bytes, its offsets span "
                      f"{e - b}")
        t = torch.frombuffer(bytearray(body[b:e]), dtype=dtype) if e > b else torch.empty(0, dtype=dtype)
        out[key] = t.reshape(shape)
    return out


# ------------------------------------------------------------------------------------------------------------ main

def _refused(path: Path, name: str) -> BenchError:
    return BenchError(f"checkpoint {path} was refused: loading it would call {name}, which can run arbitrary code "
                      "(only tensors, numpy arrays and argparse.Namespace are allowed)", TRUST_FIX)


def _truncated(path: Path, why: str) -> BenchError:
    return BenchError(f"checkpoint {path} is truncated or corrupt ({why})",
                      "download or copy it again and compare its sha256 with the published one")


def _load_torch(data: bytes, trust: bool) -> Any:
    # deserialized from the bytes that were hashed (not from the path, which may point elsewhere by now)
    if trust:
        return torch.load(io.BytesIO(data), weights_only=False, map_location="cpu")
    with torch.serialization.safe_globals(torch_safe_globals()):
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def read_checkpoint(path: str | Path, trust: bool = False) -> RawCheckpoint:
    """Read ``path`` into Python objects without executing code from it (unless ``trust``)."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise BenchError(f"checkpoint {path} is a broken symbolic link or a symlink loop", "point it at the checkpoint file")
        raise BenchError(f"checkpoint {path} does not exist", "check the path (or use random:ARCH for an untrained baseline)")
    if path.is_dir():
        raise BenchError(f"checkpoint {path} is a directory", "pass the checkpoint file itself")
    try:
        with open(path, "rb") as fh:  # read once: what is hashed is what is deserialized
            data = fh.read()
    except OSError as e:
        raise BenchError(f"checkpoint {path} cannot be read ({e.strerror})", "check the file's permissions") from None
    size = len(data)
    if size == 0:
        raise BenchError(f"checkpoint {path} is empty (0 bytes)", "download or copy it again")
    digest = hashlib.sha256(data).hexdigest()
    head = data[:16]

    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise _truncated(path, f"incomplete zip archive, {size} bytes")
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
        if not any(n.endswith("data.pkl") for n in names):
            raise BenchError(f"{path} is a zip archive but not a PyTorch checkpoint (it holds {', '.join(names[:3])}"
                             f"{', ...' if len(names) > 3 else ''})", "pass the checkpoint file itself (.pth/.pt/.pkl)")
        container = "torch-zip"
    elif head.startswith(LEGACY_MAGIC):
        container = "torch-legacy"
    elif path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size):
        return RawCheckpoint(read_safetensors(path, data), "safetensors", trust, digest, size)
    elif (len(head) >= 2 and head[:1] == b"\x80" and 2 <= head[1] <= 5) or head[:1] in (b"(", b"}", b"]"):
        container = "pickle"
    else:
        raise BenchError(f"{path} is not a checkpoint (not a torch, pickle or safetensors file; starts with {head[:8]!r})",
                         "pass a .pth/.pth.tar/.pt/.pkl/.safetensors checkpoint file")

    try:
        if container == "pickle":
            fh = io.BytesIO(data)
            if trust:
                obj = pickle.load(fh, encoding="latin1")
            else:
                obj = RestrictedUnpickler(fh, encoding="latin1").load()
        else:
            obj = _load_torch(data, trust)
    except RefusedGlobal as e:
        raise _refused(path, e.name) from None
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        if m:
            raise _refused(path, m.group(1)) from None
        if "truncated" in msg or "EOF" in msg:
            raise _truncated(path, msg.splitlines()[0][:120]) from None
        first = next((ln.strip() for ln in msg.splitlines() if "rror" in ln and "Weights only load failed" not in ln),
                     msg.splitlines()[0] if msg else "")
        raise BenchError(f"checkpoint {path} cannot be read safely ({first[:160]})", TRUST_FIX) from None
    except EOFError:
        raise _truncated(path, f"file ends early at {size} bytes") from None
    except RuntimeError as e:
        msg = str(e)
        if any(s in msg for s in ("EOF", "central directory", "PytorchStreamReader", "corrupted", "truncated")):
            raise _truncated(path, msg.split(".")[0][:120]) from None
        raise BenchError(f"checkpoint {path} cannot be read ({type(e).__name__}: {msg.splitlines()[0][:160]})",
                         "check that it is a PyTorch checkpoint") from None
    except (ValueError, KeyError, TypeError, IndexError, struct.error, zipfile.BadZipFile, UnicodeDecodeError) as e:
        detail = str(e).splitlines()[0][:120] if str(e) else ""
        raise BenchError(f"{path} is not a readable checkpoint ({type(e).__name__}: {detail})",
                         "pass a .pth/.pth.tar/.pt/.pkl/.safetensors checkpoint file") from None
    except (ModuleNotFoundError, AttributeError) as e:  # trusted load of a pickled class that is not importable
        raise BenchError(f"checkpoint {path} needs code that is not installed ({e})",
                         "install the package that defined the pickled objects, or re-save the state_dict") from None
    return RawCheckpoint(obj, container, trust, digest, size)
