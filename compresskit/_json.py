"""JSON written for people to read: indented, but lists of numbers stay on one line (a plan
holds thousands of neuron indices)."""

from __future__ import annotations

import json
import re
from typing import Any

_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]")


def dumps(obj: Any) -> str:
    text = json.dumps(obj, indent=1)
    return _NUMBER_LIST.sub(
        lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text
    )
