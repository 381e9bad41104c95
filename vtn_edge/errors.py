"""Typed errors whose messages say what was wrong and what was expected."""

import errno


class VtnEdgeError(Exception):
    """Base class for every error the project raises on purpose."""


class ModelError(VtnEdgeError):
    """A model directory, IR pair or manifest is missing, corrupt or inconsistent."""


class FrameError(VtnEdgeError):
    """A frame cannot be used (empty, wrong dtype, unsupported channel count)."""


class SourceError(VtnEdgeError):
    """A video source cannot be opened or read."""


class DataError(VtnEdgeError):
    """A dataset, label file or calibration set is unusable."""


def port_error(service: str, host: str, port: int, exc: OSError, option: str) -> VtnEdgeError:
    """What to tell a user whose server could not bind (e.g. the port is taken)."""
    if exc.errno == errno.EADDRINUSE:
        return VtnEdgeError(f"{service} port {host}:{port} is already in use: pick another {option}")
    return VtnEdgeError(f"cannot serve the {service} on {host}:{port}: {exc.strerror}")
