"""Errors a user can cause and fix, and the exit codes. The CLI prints an InputError as one
paragraph and exits with 2."""

# Exit codes, documented in the README and `runner --help`.
EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_STOPPED = 3


class InputError(Exception):
    """Bad input from the user (job file, prompts file, options, environment).

    The message is one paragraph: what is wrong, where (file, field, line when known), and what
    to do about it. Raised before anything is written, so the database stays unchanged.
    """

    exit_code = 2
