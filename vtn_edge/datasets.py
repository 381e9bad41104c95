"""Video dataset layouts, shared by training (converter) and evaluation (both sides).

- folder per class: `root/<class>/*.mp4|avi|mkv|...` (a `labels.txt` in root fixes the order);
- list file: lines of `relative/path label_index` with a labels file (MMAction2's convention);
- the original authors' layout: an ActivityNet-style JSON annotation with subsets, frames
  extracted as `<root>/<label>/<video>/image_%05d.jpg` (root: the JSON's folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vtn_edge.errors import DataError
from vtn_edge.metadata import read_labels
from vtn_edge.video import VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoItem:
    path: Path
    label: int


@dataclass(frozen=True)
class VideoDataset:
    items: tuple[VideoItem, ...]
    labels: tuple[str, ...]
    source: Path

    def __len__(self) -> int:
        return len(self.items)


def open_dataset(
    path: str | Path, *, labels_file: str | Path | None = None, subset: str = "validation"
) -> VideoDataset:
    """Open any of the three layouts; `subset` selects from a JSON annotation."""
    path = Path(path)
    if path.is_dir():
        return _folder_per_class(path)
    if not path.is_file():
        raise DataError(f"dataset {path} does not exist (expected a folder per class, a list file or a JSON)")
    if path.suffix == ".json":
        return _activitynet(path, subset)
    return _list_file(path, labels_file)


def _folder_per_class(root: Path) -> VideoDataset:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if (root / "labels.txt").is_file():
        labels = read_labels(root / "labels.txt")
    else:
        labels = tuple(d.name for d in class_dirs)
    index = {name: i for i, name in enumerate(labels)}
    items = []
    for d in class_dirs:
        if d.name not in index:
            raise DataError(f"folder {d} is not a class listed in {root / 'labels.txt'}")
        videos = sorted(p for p in d.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        items += [VideoItem(p, index[d.name]) for p in videos]
    if not items:
        raise DataError(f"{root} holds no videos ({', '.join(VIDEO_SUFFIXES)}) in class folders")
    return VideoDataset(tuple(items), labels, root)


def _list_file(path: Path, labels_file: str | Path | None) -> VideoDataset:
    labels_path = Path(labels_file) if labels_file else path.with_name("labels.txt")
    if not labels_path.is_file():
        raise DataError(f"list file {path} needs a labels file: pass --labels or put labels.txt beside it")
    labels = read_labels(labels_path)
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= len(labels):
            raise DataError(
                f"{path}:{number}: expected 'relative/path label_index' with an index below {len(labels)}, got {line!r}"
            )
        items.append(VideoItem(path.parent / parts[0], int(parts[1])))
    if not items:
        raise DataError(f"list file {path} is empty")
    return VideoDataset(tuple(items), labels, path)


def _activitynet(path: Path, subset: str) -> VideoDataset:
    try:
        data = json.loads(path.read_text())
        labels = tuple(data["labels"])
        database = data["database"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not an ActivityNet-style annotation with 'labels' and 'database': {exc}") from None
    index = {name: i for i, name in enumerate(labels)}
    items = []
    for video, entry in sorted(database.items()):
        if entry.get("subset") != subset:
            continue
        label = entry.get("annotations", {}).get("label")
        if label not in index:
            raise DataError(f"{path}: video {video} has label {label!r}, which is not in 'labels'")
        items.append(VideoItem(path.parent / label / video, index[label]))
    if not items:
        raise DataError(f"{path} has no videos in subset {subset!r}")
    return VideoDataset(tuple(items), labels, path)
