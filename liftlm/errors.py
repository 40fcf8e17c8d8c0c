"""One exception type for problems the user can fix (bad input, missing model, broken adapter).

The CLI turns it into one line on stderr and exit status 2; library users catch it like any ValueError.
"""


class LiftError(ValueError):
    """A problem with the user's input; the message says what is wrong and how to fix it."""
