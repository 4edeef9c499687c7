"""Errors a user can cause, each with a message that says what is wrong and how to fix it."""


class MetodsError(Exception):
    """Base class of every error that metods reports to a user without a traceback."""
