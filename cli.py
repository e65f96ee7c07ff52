"""drgdip command line: a thin layer of click commands over the library API.

Each command parses options, calls one library function, and formats the result.
Errors a person can fix (a bad file, a bad scheme, a bad policy) end the command with
one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import functools
import sys

import click

from grouper.io import InputError


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"drgdip: {self.format_message()}", err=True)


def user_errors(fn):
    """Turn the library's input errors into one-line messages with exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, ValueError, KeyError, FileNotFoundError, PermissionError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(msg) from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="drgdip")
def main():
    """Group discharges into CHS-DRG and DIP groups and settle them with the regional point method.

    \b
    Example:
      drgdip scheme compile ../shared/data/chs-drg/CHS_DRG_11 -o chs11.drgscheme
      drgdip group discharges.parquet -o grouped.parquet --scheme chs11.drgscheme
    """


# --- grouping commands (grouper/) ---


# --- codes and quality-control commands (codesets/) ---


# --- weights and settlement commands (weights/) ---


# --- DIP commands ---


# --- demo, synth and report commands ---


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
