"""Errors a user can cause. The CLI prints them as one line; anything else is a bug and raises."""


class PipelineError(Exception):
    """A problem with the user's input (config, data, profile, files): reported as one line."""
