"""One error type for bad input, reported by every stage as a single line."""


class InputError(Exception):
    """Bad input: a missing/corrupt file, a wrong schema, invalid values or params.

    The message must name the offending file, field or parameter; stage CLIs print it as
    one line and exit non-zero.
    """
