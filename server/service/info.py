"""What GetInfo may tell any reader about the served bundle: names and versions, no paths.

A manifest records where its inputs came from on the build machine (the encoder folder,
the catalog file). Those absolute paths name users, home directories and mount points, so
GetInfo reports only the last component of each (the model or file name).
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

# Folder names that say nothing on their own: ".../all-MiniLM-L6-v2/model" is that model.
_GENERIC_NAMES = {"model", "models", "onnx", "encoder", "weights", "snapshot", "export"}


def _is_absolute(text: str) -> bool:
    return text.startswith("/") or PureWindowsPath(text).is_absolute()


def public_name(path: str) -> str:
    """A path's last meaningful component; any other string unchanged."""
    if not _is_absolute(path):
        return path
    parts = PureWindowsPath(path).parts if "\\" in path else PurePosixPath(path).parts
    parts = [p for p in parts[1:] if p]  # drop the root
    if not parts:
        return ""
    if parts[-1].lower() in _GENERIC_NAMES and len(parts) > 1:
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1]


def public_manifest(value: Any) -> Any:
    """The manifest with every absolute path replaced by its public name."""
    if isinstance(value, dict):
        return {k: public_manifest(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_manifest(v) for v in value]
    if isinstance(value, str):
        return public_name(value)
    return value
