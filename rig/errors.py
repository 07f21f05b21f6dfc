"""Errors an operator can cause or fix.

Every `RigError` carries one line saying what is wrong and how to fix it; the CLI prints that line,
no traceback, and exits with `exit_code`.
"""


class RigError(Exception):
    """An operator-facing error: one line, what and how to fix."""

    exit_code = 2


class ConfigError(RigError):
    """A session, rig or manifest file is wrong."""


class PlanChangedError(RigError):
    """The session's plan no longer matches the run store it would resume."""


class DeviceError(RigError):
    """A device could not be reached or stopped answering."""

    exit_code = 3


class CameraError(DeviceError):
    """The camera failed in a way a retry of the same capture may fix."""


class CameraUnavailable(CameraError):
    """The camera cannot take more photos until an operator acts (store full, gone for good)."""


class ImageError(RigError, ValueError):
    """An image file that cannot be shown (one line: the file, why, what to do).

    A ValueError too, because the engine fails an item whose image does not decode by catching ValueError
    (rig/images.py raises that today): the item fails with this reason and the run goes on.
    """
