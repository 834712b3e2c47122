"""Errors a user can cause: the CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input (flag, file, dataset, network) that they can fix.

    The message must name the offending value and the fix; the CLI shows it without a traceback.
    """

    exit_code = 2
