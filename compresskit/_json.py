"""JSON written for people to read: indented, but lists of numbers stay on one line (a plan
holds thousands of neuron indices)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]")


def dumps(obj: Any) -> str:
    text = json.dumps(obj, indent=1)
    return _NUMBER_LIST.sub(
        lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text
    )


def read_format_file(
    path: Path,
    *,
    fmt: str,
    version: int,
    what: str,
    error: type[Exception],
    fix: str = "",
) -> dict[str, Any]:
    """A JSON file compresskit wrote, checked to be `fmt` at `version` before anything reads
    its fields. `what` names the kind of file in errors; `fix` is appended to the version
    error. Every failure raises `error` with one line."""
    data = read_json_object(path, what=what, error=error)
    if data.get("format") != fmt:
        raise error(f"{path} is not a compresskit {what} (expected format {fmt!r})")
    if data.get("format_version") != version:
        raise error(
            f"{path} has format_version {data.get('format_version')!r}; "
            f"this compresskit reads version {version}{fix}"
        )
    return data


def read_json_object(
    path: Path, *, what: str, error: type[Exception], fix: str = ""
) -> dict[str, Any]:
    """A JSON object from a file, or `error` with one line naming the file (`fix` appended):
    never another exception, whoever wrote the file and however it was cut short."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    # ValueError: not UTF-8, not JSON, or a number too long to read; RecursionError: nested
    # too deeply.
    except (OSError, ValueError, RecursionError) as err:
        raise error(f"{path} ({what}) is damaged, not readable JSON: {err}{fix}") from None
    if not isinstance(data, dict):
        raise error(f"{path} ({what}) is damaged: it holds no JSON object{fix}")
    return data
