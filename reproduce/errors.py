"""User-facing errors: one line, exit status 2, no traceback.

Every problem with a user's input (a truncated file, a list line with the wrong number of labels,
a checkpoint of another arch) raises `UserError` with a message that names the file (and line, or
key and shapes) and what is wrong. Command-line entry points run through `run_cli`, which turns it
into that one line on stderr and exit status 2.
"""
import argparse
import sys


class UserError(Exception):
    """A problem with the user's input; the message is a single line shown as is."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are a UserError too: one line, exit status 2 via run_cli."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def run_cli(main, argv=None):
    """Call `main(argv)`; map UserError to `error: <message>` on stderr and exit status 2."""
    try:
        main(argv)
    except UserError as e:
        msg = " ".join(str(e).split("\n"))
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
