"""Resident memory of a StreamingRecognizer over many frames (pushing a looped clip)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vtn_edge import StreamingRecognizer
from vtn_edge.video import read_frames


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=100_000)
    args = parser.parse_args()
    clip = read_frames(args.source)
    with StreamingRecognizer(args.model) as rec:
        for i in range(2000):
            rec.push(clip[i % len(clip)])
        rec.flush()
        start = rss_mb()
        print(f"after warm-up (2000 frames): {start:.1f} MB")
        for i in range(args.frames):
            rec.push(clip[i % len(clip)])
            if (i + 1) % 20_000 == 0:
                print(f"{i + 1:7d} frames: {rss_mb():.1f} MB", flush=True)
        rec.flush()
        end = rss_mb()
    print(f"growth over {args.frames} frames: {end - start:+.1f} MB")


if __name__ == "__main__":
    main()
