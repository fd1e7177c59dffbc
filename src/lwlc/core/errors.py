"""The one exception type lwlc raises for problems a user can fix, and how its messages
show sizes."""


class LwlcError(Exception):
    """A user-facing error: the message is one line saying what is wrong and what to do.

    The command line turns it into ``lwlc: error: <message>`` and exit code 2, without a
    traceback (``--debug`` shows one).
    """


def readable_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit it fills, to 3 significant digits (``420 B``,
    ``2.34 KiB``, ``1.5 GiB``): a size that reads ``0.00 GiB`` tells a user nothing."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.0f} {units[i]}" if n >= 100 else f"{n:.3g} {units[i]}"
