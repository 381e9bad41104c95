"""Typed errors whose messages say what was wrong and what was expected."""


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
