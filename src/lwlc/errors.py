"""The one exception type lwlc raises for problems a user can fix."""


class LwlcError(Exception):
    """A user-facing error: the message is one line saying what is wrong and what to do.

    The command line turns it into ``lwlc: error: <message>`` and exit code 2, without a
    traceback (``--debug`` shows one).
    """
