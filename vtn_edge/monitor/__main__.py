"""`python -m vtn_edge.monitor` (and examples/rtsp_monitor.py)."""

import os
import sys

# Our log says when a camera is unreachable; FFmpeg and OpenCV would repeat it on every retry.
# Set before cv2 is imported (OpenCV reads its log level once); a user's own setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from vtn_edge.monitor.cli import main  # noqa: E402

sys.exit(main())
