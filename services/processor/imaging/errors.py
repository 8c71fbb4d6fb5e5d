"""The one exception imaging code raises for bad input."""


class ImagingError(Exception):
    """A deterministic problem with the input file (unreadable, truncated, unsupported, too large).

    ``str(error)`` is written for users and shown to them as-is, so it never carries a traceback
    or internal paths.
    """
