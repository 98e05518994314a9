"""What the user sees: consoles, error rendering, exit codes and value formatting.

Exit codes (the same for every command):
  0  done
  1  the function or its code failed (a function error; a deploy rejected or failed)
  2  mist could not do what was asked (bad input, an error answer of the API, server unreachable)

Results go to stdout; progress, diagnostics and errors to stderr, so `--json` output can be piped.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mist.cli.api import ApiError, Unreachable
from mist.errors import DeployRejected, MistError

EXIT_FAILED = 1
EXIT_ERROR = 2

F = TypeVar("F", bound=Callable[..., Any])


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_table(table: Table) -> None:
    """Print a table to stdout; piped, it keeps its natural width (nothing cut off for scripts)."""
    console = stdout()
    if not console.is_terminal:
        console = Console(highlight=False, width=10_000)
    console.print(table)


def table(*columns: str) -> Table:
    """A borderless table; on a narrow terminal the first column (a name or an id) folds onto
    more lines rather than being cut, so it can still be copied."""
    out = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for i, column in enumerate(columns):
        out.add_column(column, overflow="fold" if i == 0 else "ellipsis", no_wrap=i > 0, min_width=len(column))
    return out


def say(text: str | Text, *, err: bool = False, style: str | None = None) -> None:
    """Print one message as is (no markup, no wrapping)."""
    (stderr() if err else stdout()).print(text, style=style, markup=False)


def print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def fail(message: str, *, detail: str | None = None, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: message` (and the detail) in red to stderr and exit with `code`."""
    say(f"error: {message}", err=True, style="red")
    if detail:
        say(detail.rstrip("\n"), err=True, style="red")
    raise typer.Exit(code)


def handle_errors(command: F) -> F:
    """Turn the expected failures of a command into a message and an exit code, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Unreachable as exc:
            fail(exc.message)
        except ApiError as exc:
            hint = f" (retry after {exc.retry_after} s)" if exc.retry_after else ""
            if exc.status == 401:
                hint = (" — give the CLI a key: MIST_API_KEY=mist_..., or `mist login URL`; for a mist up on this "
                        "machine it reads DATA_DIR/admin.key if you may")
            fail(exc.message + hint, detail=exc.detail)
        except DeployRejected as exc:
            fail(exc.message, detail=exc.detail, code=EXIT_FAILED)
        except MistError as exc:
            fail(exc.message)

    return wrapper  # type: ignore[return-value]


# -- formatting --------------------------------------------------------------------------------


def fmt_ts(value: object) -> str:
    """An API timestamp (ISO 8601, or seconds since the epoch) as `2026-11-26T04:01:02Z`."""
    try:
        if isinstance(value, (int, float)):
            dt = datetime.fromtimestamp(value, tz=timezone.utc)
        else:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return str(value) if value is not None else "-"
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_seconds(value: object) -> str:
    return f"{value:g} s" if isinstance(value, (int, float)) else "-"


def fmt_bytes(n: object) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    if n < 1000:
        return f"{n:.0f} B"
    return f"{n / 1e3:.1f} kB" if n < 1e6 else f"{n / 1e6:.1f} MB"


def plural(n: object, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def version_line(fv: dict[str, Any]) -> str:
    """`hello version 3 (main.handler, 128 MB, 30 s)`"""
    return (
        f"{fv.get('name')} version {fv.get('version')} "
        f"({fv.get('handler')}, {fv.get('memory_mb')} MB, {fmt_seconds(fv.get('timeout_s'))})"
    )


def help_text(text: str) -> str:
    """Command help as typer's rich mode shows it best: prose paragraphs on one line each (the
    terminal wraps them), indented example lines kept as they are."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if all(line.startswith("  ") for line in p.splitlines()) else " ".join(p.split("\n"))
        for p in paragraphs
    )
