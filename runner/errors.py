"""Errors a user can cause and fix. The CLI prints them as one paragraph and exits with 2."""


class InputError(Exception):
    """Bad input from the user (job file, prompts file, options, environment).

    The message is one paragraph: what is wrong, where (file, field, line when known), and what
    to do about it. Raised before anything is written, so the database stays unchanged.
    """

    exit_code = 2
