"""Reading the project's JSON files as untrusted input: strict JSON, typed fields, one-line errors.

Every manifest, index and shard file is read through `read_json` and checked with `field`, so a
wrong type is reported as "FILE: 'key' must be ..., found ..." instead of surfacing later as an
unexpected TypeError (or, worse, as a string iterated character by character).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fashion_match.errors import FmError

MAX_JSON_BYTES = 256 << 20  # no manifest or shard file of ours comes near; a larger one is not ours


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: Path, error: type[FmError], what: str, *, hint: str = "") -> Any:
    """Parse `path` as strict JSON (no NaN/Infinity), or raise `error` naming the file and `hint`."""
    suffix = f"; {hint}" if hint else ""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise error(f"{path}: {size:,} bytes is too large for {what}{suffix}")
        text = path.read_text(encoding="utf-8")
        return json.loads(text, parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise error(f"{path}: missing ({what}){suffix}") from None
    except RecursionError:
        raise error(f"{path}: not {what} (JSON nested too deeply){suffix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise error(f"{path}: not valid JSON for {what} ({' '.join(str(e).split())[:120]}){suffix}") from None


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, int | float) else type(v).__name__
    )


KINDS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "list of strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "list of objects": lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
}


def field(
    obj: dict[str, Any],
    key: str,
    kind: str,
    where: Path | str,
    error: type[FmError],
    *,
    required: bool = True,
    low: float | None = None,
    high: float | None = None,
    hint: str = "",
) -> Any:
    """obj[key] checked to be of `kind` (a name in KINDS) and, for numbers, within [low, high]."""
    suffix = f"; {hint}" if hint else ""
    if key not in obj:
        if required:
            raise error(f"{where}: missing '{key}' ({kind}){suffix}")
        return None
    v = obj[key]
    if not KINDS[kind](v):
        raise error(f"{where}: '{key}' must be {kind}, found {_type_name(v)}{suffix}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise error(f"{where}: '{key}' is {v}, outside {low}..{high}{suffix}")
    return v


def require_object(v: Any, where: Path | str, error: type[FmError], what: str, hint: str = "") -> dict[str, Any]:
    if not isinstance(v, dict):
        raise error(f"{where}: expected {what} (a JSON object), found {_type_name(v)}{'; ' + hint if hint else ''}")
    return v
