"""Errors that a user can act on; the CLI prints them as one line and exits with code 2."""


class HanclipError(Exception):
    """Base class for every error hanclip reports to a user."""


class BundleError(HanclipError):
    """A model bundle is missing, malformed, or does not match its encoders."""


class UnknownModel(BundleError):
    """A model name that is neither a built-in nor a bundle directory."""


class ImageLoadError(HanclipError):
    """An image file cannot be read or decoded."""
