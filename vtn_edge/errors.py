"""Typed errors whose messages say what was wrong and what was expected."""

import errno
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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


def run_command(command: Callable[[T], int], args: T) -> int:
    """A command's exit code: an error we raise on purpose is one line on stderr and 2, Ctrl-C is 130."""
    try:
        return command(args)
    except VtnEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
