"""Atomic, checksummed file I/O: nothing half-written survives a kill, nothing corrupt is read silently.

Every writer goes through a temporary file in the destination folder and `os.replace`, which is atomic on
POSIX file systems. Checkpoints are safetensors only (no pickle anywhere in husai).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


class ChecksumError(RuntimeError):
    """A file's sha256 does not match the one recorded for it."""


class SafetensorsFormatError(RuntimeError):
    """A checkpoint is not a readable safetensors file (truncated, pickled, wrong tensors)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, what: str = "file") -> None:
    """Raise ChecksumError naming the file when its content differs from the recorded hash."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{what} {path}: sha256 mismatch (recorded {expected[:16]}…, found {actual[:16]}…); "
            "the file is corrupt or was changed after its manifest was written"
        )


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; on success move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _json_default(obj: Any):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return _finite_or_none(float(obj))
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None


def _sanitize(obj: Any):
    """JSON has no NaN/Inf: non-finite floats become null so downstream readers see 'missing', not 0."""
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, Mapping):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_sanitize(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(_sanitize(obj), f, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
            f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def read_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from e


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Atomic write through an arbitrary writer that takes a destination path."""
    with atomic_path(path) as tmp:
        writer(tmp)


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_safetensors(path: str | os.PathLike, expected: Mapping[str, tuple] | None = None) -> dict:
    """Load tensors; refuse pickles and truncated files; optionally check names and shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] == b"\x80\x04" or head[:2] == b"\x80\x02" or head[:4] == b"PK\x03\x04":
        raise SafetensorsFormatError(f"{path}: is a pickle/torch.save file; husai loads safetensors only")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SafetensorsFormatError(f"{path}: not a valid safetensors file ({e})") from e
    if expected:
        for name, shape in expected.items():
            if name not in tensors:
                raise SafetensorsFormatError(f"{path}: missing tensor {name!r} (has {sorted(tensors)})")
            if tuple(tensors[name].shape) != tuple(shape):
                raise SafetensorsFormatError(
                    f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {tuple(shape)}"
                )
    return tensors
