"""A real RTSP server for tests: GStreamer's rtsp-server, serving one video file in a loop.

Runs under the system Python (Debian's python3-gi), not the project's venv:

    /usr/bin/python3 tests/servers/rtsp_server.py VIDEO PORT [--fps N]

A player pipeline decodes the file at its real frame size and hands frames to a shared RTSP
media (H.264, zero latency) through intervideosink/intervideosrc, looping with a flushing seek on
EOS. Prints "READY rtsp://127.0.0.1:PORT/stream" once the player has prerolled; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstPbutils", "1.0")
from gi.repository import GLib, Gst, GstPbutils, GstRtspServer  # noqa: E402


def video_size(path: str) -> tuple[int, int]:
    info = GstPbutils.Discoverer.new(10 * Gst.SECOND).discover_uri(Gst.filename_to_uri(path))
    stream = info.get_video_streams()[0]
    return stream.get_width(), stream.get_height()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("video")
    parser.add_argument("port", type=int)
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()
    Gst.init(None)
    width, height = video_size(args.video)
    channel = "vtnedge"
    player = Gst.parse_launch(
        f'filesrc location="{args.video}" ! decodebin ! videoconvert ! videoscale ! videorate ! '
        f"video/x-raw,format=I420,width={width},height={height},framerate={args.fps}/1 ! "
        f"intervideosink channel={channel} sync=true"
    )
    loop = GLib.MainLoop()

    def on_message(_bus, message):
        if message.type == Gst.MessageType.EOS:
            player.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif message.type == Gst.MessageType.ERROR:
            print("ERROR", message.parse_error()[0].message, file=sys.stderr, flush=True)
            loop.quit()

    bus = player.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    player.set_state(Gst.State.PLAYING)
    player.get_state(10 * Gst.SECOND)  # preroll, so the first client gets the real frame size

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( intervideosrc channel={channel} ! video/x-raw,format=I420,width={width},height={height},"
        f"framerate={args.fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! "
        "rtph264pay name=pay0 config-interval=1 pt=96 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/stream", factory)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}/stream {width}x{height}", flush=True)
    loop.run()
    player.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
