"""Optional packages (the `onnx` extra: onnx, onnxruntime), imported only where a command
needs them. Missing, they are one line naming the extra to install, not an ImportError
traceback from deep inside a command."""

from __future__ import annotations

import importlib
from typing import Any

from compresskit.errors import MissingDependencyError, one_line


def import_extra(module: str, purpose: str, extra: str = "onnx") -> Any:
    """`module`, imported; MissingDependencyError when it is absent or does not import."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_extra(module, purpose, err, extra) from None


def missing_extra(
    module: str, purpose: str, err: ImportError, extra: str = "onnx"
) -> MissingDependencyError:
    """The one-line error for `err`, raised importing `module` (or a module it imports)."""
    absent = isinstance(err, ModuleNotFoundError) and err.name in (module, module.split(".")[0])
    # Installed but broken (a shared library that does not load) needs the same reinstall,
    # but the user should see why.
    why = "is not installed" if absent else f"cannot be imported: {one_line(err)}"
    return MissingDependencyError(
        f"{purpose} needs the {extra} extra ({module} {why}): pip install 'compresskit[{extra}]'"
    )
