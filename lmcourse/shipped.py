"""The small trained models shipped in ``lmcourse/checkpoints/``: saving, loading, the manifest.

Every shipped model is one file holding its config (a dataclass as a dict) and
its weights, stored in float16 to keep the package small, plus one entry in
``checkpoints/manifest.json`` (config, steps, held-out scores, sha256 and the
command that reproduces it). The LSTM, the GPT and the masked LM all go through
these functions, so a missing or mismatched file always gets the same clear
message, with the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``.

    An interrupted save leaves the previous file (or none) behind, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it a normal file's mode
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (the manifest records it for each checkpoint)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def model_config(model: nn.Module) -> dict | None:
    """A model's ``config`` dataclass as a dict (``None`` if it has none)."""
    cfg = getattr(model, "config", None)
    try:
        return asdict(cfg) if cfg is not None else None
    except TypeError:
        return None


def save_weights(model: nn.Module, path: str | Path, dtype: torch.dtype = torch.float16, **extra) -> None:
    """Config + weights only (stored as ``dtype`` to keep the file small), written atomically."""
    weights = {k: v.detach().cpu().to(dtype) for k, v in model.state_dict().items()}
    atomic_save({"config": model_config(model), "state_dict": weights, **extra}, path)


def load_weights(path: str | Path, build: Callable[[dict], nn.Module], what: str, rebuild: str,
                 device: torch.device | str = "cpu") -> nn.Module:
    """Load a file written by :func:`save_weights` into ``build(config)``: float32, eval mode.

    ``what`` names the model in messages and ``rebuild`` is the command that makes
    the file. A missing file raises ``FileNotFoundError`` saying that command; a
    file of another kind, or weights that do not fit the architecture, raise
    ``ValueError`` saying which.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} checkpoint at {path}; rebuild it with:  {rebuild}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); rebuild it with:  {rebuild}"
        ) from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not an lmcourse {what} checkpoint (no config/state_dict)")
    try:
        model = build(ckpt["config"])
        model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{path} does not match the architecture of {what}: {err}; rebuild it with:  {rebuild}"
        ) from None
    return model.to(device).eval()


def write_manifest_entry(entry: dict, folder: str | Path = CHECKPOINT_DIR) -> None:
    """Read-modify-write one entry (``entry["name"]``) of ``folder/manifest.json``; others untouched."""
    path = Path(folder) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest[entry["name"]] = entry
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
