"""Where a benchmark script writes its result: only where it is asked to.

`--out FILE` writes there; `--record` writes the committed record under benchmarks/results/ (the
file a README number cites). Without either the result is printed and nothing in the source tree
changes, so trying a benchmark never rewrites a record by accident.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fashion_match.fileio import write_json_atomic


def add_output_args(ap: argparse.ArgumentParser, record: str) -> None:
    ap.add_argument("--out", type=Path, help="write the result to this JSON file")
    ap.add_argument("--record", action="store_true", help=f"write the committed record, benchmarks/results/{record}")


def output_path(args: argparse.Namespace, record: Path) -> Path | None:
    """The file to write (`--out`, else the record with `--record`), or None: print only."""
    return args.out or (record if args.record else None)


def write_result(args: argparse.Namespace, record: Path, result: dict[str, Any]) -> Path | None:
    path = output_path(args, record)
    if path is None:
        print(json.dumps(result, indent=2))
        return None
    write_json_atomic(path, result)
    print(f"-> {path}")
    return path
