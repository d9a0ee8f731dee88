"""What every `fm-*` command shares: one-line errors, exit 2, `--debug` for the traceback."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from fashion_match.errors import FmError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR = 2


def debug_option(f: F) -> F:
    # Parsed for --help and for its place on the command line; `entrypoint` acts on it before
    # parsing, so a group and its subcommand cannot configure logging twice.
    return click.option(
        "--debug", is_flag=True, expose_value=False, is_eager=True, help="Show debug logs and full tracebacks."
    )(f)


def echo_json(obj: Any) -> None:
    """Print one strict JSON document: a NaN or infinity is a bug to raise, never `NaN` on stdout."""
    click.echo(json.dumps(obj, allow_nan=False))


def _configure_logging(debug: bool) -> None:
    """Warnings go to the log: stderr keeps to one line per error unless --debug asks for more.

    Libraries warn through Python's `warnings` (Pillow: "Corrupt EXIF data") and libtiff prints
    from C ("LZWDecode: Not enough data"); both are about a file we already judge ourselves.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    if not debug:
        logging.getLogger("py.warnings").setLevel(logging.ERROR)
        from fashion_match.data.codecs import silence_codec_messages

        silence_codec_messages()


def fail(prog: str, message: str) -> NoReturn:
    click.echo(f"{prog}: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _exit_now(code: int) -> NoReturn:
    """Flush and leave without interpreter teardown.

    Tearing down onnxruntime's thread pools and freeing every module costs ~60-90 ms on the
    2-core reference machine, a quarter of a cold `fm-match`. Only for commands whose
    outputs are all written (and fsync'ed) before they return.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def entrypoint(command: click.Command, prog: str, *, fast_exit: bool = False) -> Callable[..., NoReturn]:
    """Wrap a click command so no user error ever ends in a traceback."""

    def main(argv: list[str] | None = None) -> NoReturn:
        args = sys.argv[1:] if argv is None else argv
        debug = "--debug" in args
        _configure_logging(debug)
        try:
            # make_context + invoke rather than command.main: click's main turns any EOFError
            # (numpy reading an empty file, say) into Abort, which would read as "interrupted".
            with command.make_context(prog, list(args)) as ctx:
                rv = command.invoke(ctx)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.UsageError as e:  # one line like every other error, not click's usage block
            fail(prog, f"{' '.join(e.format_message().split())} (see {prog} --help)")
        except click.ClickException as e:
            fail(prog, " ".join(e.format_message().split()))
        except (click.Abort, KeyboardInterrupt):
            click.echo(f"{prog}: interrupted", err=True)
            sys.exit(130)
        except FmError as e:
            if debug:
                traceback.print_exc()
            fail(prog, str(e))
        except BrokenPipeError:  # `fm-... | head`
            sys.exit(0)
        except Exception as e:  # noqa: BLE001 - the last line of defence, by design
            if debug:
                traceback.print_exc()
                fail(prog, f"unexpected {type(e).__name__}: {e}")
            fail(
                prog,
                f"unexpected {type(e).__name__}: {' '.join(str(e).split())[:300]} (run with --debug for the traceback)",
            )
        code = rv if isinstance(rv, int) else 0
        if fast_exit:
            _exit_now(code)
        sys.exit(code)

    return main


def score_text(x: float) -> str:
    """A similarity or threshold for people: three decimals, and two significant digits below 0.01
    (a value-posterior space's threshold can be 0.0002, which three decimals would show as 0)."""
    return f"{x:.3f}" if x == 0 or abs(x) >= 0.01 else f"{x:.2g}"
