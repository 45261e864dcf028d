"""User-facing errors: one line, exit status 2, no traceback.

Every problem with a user's input (a truncated file, a list line with the wrong number of labels,
a checkpoint of another arch) raises `UserError` with a message that names the file (and line, or
key and shapes) and what is wrong. Command-line entry points run through `reproduce.cli.run_cli`,
which turns it into that one line on stderr and exit status 2.
"""


class UserError(Exception):
    """A problem with the user's input; the message is a single line shown as is. run_cli exits
    with `exit_code` (2; 1 for a plan whose jobs failed, reproduce.pipeline.execution.JobsFailed)."""
    exit_code = 2
