"""Online evaluation: how the monitor's events on a never-ending stream compare with annotations.

Each annotated video is streamed frame by frame through `StreamingRecognizer` (timestamps from
frame index and fps) and the raw decoder probabilities are recorded once. A label policy is then
replayed over them with the runtime's own `LabelStabilizer` and the monitor's own `EventTracker`
(with its event rules), so a sweep over policies costs one pass of the model, and the events are
the ones the monitor would publish.

Matching (ActivityNet-style): a predicted event matches an annotated one of the same label when
their temporal IoU is at least 0.3, one-to-one, greedily by IoU. Metrics: event precision,
recall and F1 (IoU 0.3; F1 at 0.5 too), start delay (from the moment the start was published,
`ActionEvent.detected_time`), start and end lag (estimated minus annotated) over matched events, false
events per hour of idle time, per-frame accuracy (idle = no label) and flicker (label changes
per minute beyond those the annotation has). Event F1 comes with a 95% interval from a bootstrap
over streams (`f1_interval`), and the JSON has each stream's counts, so two runs on the same
streams can be compared paired (`benchmarks/compare_online.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from vtn_edge.errors import DataError
from vtn_edge.metadata import Manifest
from vtn_edge.monitor.events import (
    PLAIN_EVENTS,
    SOURCE_ENDED,
    ActionEvent,
    EventRules,
    EventTracker,
    ignored_labels,
)
from vtn_edge.smoothing import LabelPolicy, LabelStabilizer
from vtn_edge.types import Prediction

ANNOTATIONS = "annotations.json"
IOU = 0.3
IOU_STRICT = 0.5
BOOTSTRAP_RESAMPLES = 2000
NUISANCE_REACH_S = 1.0  # a nuisance stays in the decoder's one-second window this long after it ends
AFTER_ACTION_S = 1.5  # a false event that starts this soon after an action ended: that action's aftermath
# where a false event (one that matches no annotated action) lies, in this order of precedence
FALSE_KINDS = {
    "late_or_split": "the right action, with too little overlap (late, too long or split)",
    "other_action": "during an action of another label",
    "after_action": f"within {AFTER_ACTION_S:g} s after an action ended",
    "idle": "in idle time",
}


@dataclass(frozen=True)
class Span:
    label: str
    start: float  # seconds
    end: float
    detected: float | None = None  # a predicted event: when its start was published (None: at `start`)

    @property
    def published(self) -> float:
        return self.start if self.detected is None else self.detected

    def frames(self, fps: float) -> slice:
        """The frames this span covers in a video at `fps`."""
        return slice(int(round(self.start * fps)), int(round(self.end * fps)))


@dataclass(frozen=True)
class AnnotatedStream:
    name: str
    path: Path
    fps: float
    frames: int
    truth: tuple[Span, ...]
    nuisances: tuple[Span, ...] = ()  # idle-time happenings that are not actions (synthetic streams only)

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    def frame_labels(self) -> list[str | None]:
        labels: list[str | None] = [None] * self.frames
        for s in self.truth:
            for i in range(self.frames)[s.frames(self.fps)]:
                labels[i] = s.label
        return labels


def is_stream_folder(path: str | Path) -> bool:
    return (Path(path) / ANNOTATIONS).is_file()


def stream_labels(root: str | Path) -> tuple[tuple[str, ...], str]:
    """(classes, background class) that an annotations.json declares for training."""
    path = Path(root) / ANNOTATIONS
    try:
        data = json.loads(path.read_text())
        labels, background = tuple(data["labels"]), data.get("background", "still")
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path} needs 'labels' (the classes, background included) to train on: {exc}") from None
    if background not in labels:
        raise DataError(f"{path}: the background class {background!r} is not in its 'labels'")
    return labels, background


def load_streams(root: str | Path, known_labels: Sequence[str]) -> list[AnnotatedStream]:
    """Read `root/annotations.json` (ActivityNet layout with fps and frames per video) and check
    it against the videos beside it and the model's classes."""
    root = Path(root)
    path = root / ANNOTATIONS
    if not root.is_dir():
        raise DataError(f"--online {root} is not a folder (expected streams and {ANNOTATIONS})")
    if not path.is_file():
        raise DataError(f"{root} has no {ANNOTATIONS} (write one with `converter dataset synth --streams N`)")
    try:
        database = json.loads(path.read_text())["database"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not an ActivityNet-style annotation with a 'database': {exc}") from None
    if not database:
        raise DataError(f"{path} lists no videos")
    streams = []
    for name, entry in sorted(database.items()):
        streams.append(_stream(root, path, name, entry, set(known_labels)))
    return streams


def watching(
    streams: Sequence[AnnotatedStream], manifest: Manifest, actions: Collection[str] | None
) -> tuple[list[AnnotatedStream], frozenset[str]]:
    """The streams as a camera that watches only `actions` (`--actions`; None: every action) sees
    them, and the labels that raise no event there. The other actions' events leave the truth, so
    their time is idle time for such a camera."""
    ignore = ignored_labels(manifest.labels, manifest.background, actions, "--actions")
    if actions is None:
        return list(streams), ignore
    return [replace(s, truth=tuple(span for span in s.truth if span.label in actions)) for s in streams], ignore


def _stream(root: Path, path: Path, name: str, entry: dict, known: set[str]) -> AnnotatedStream:
    try:
        fps, frames = float(entry["fps"]), int(entry["frames"])
        truth = _spans(entry["annotations"], "label")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(
            f"{path}: video {name} needs 'fps', 'frames' and 'annotations' [{{label, segment: [start, end]}}]: {exc}"
        ) from None
    try:
        nuisances = _spans(entry.get("nuisances", ()), "kind")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(f"{path}: video {name}: 'nuisances' must be [{{kind, segment: [start, end]}}]: {exc}") from None
    unknown = sorted({s.label for s in truth} - known)
    if unknown:
        raise DataError(f"{path}: video {name} is annotated with {', '.join(unknown)}, which the model does not know")
    videos = [p for p in root.glob(f"{name}.*") if p.suffix != ".json"]
    if not videos:
        raise DataError(f"{path} names video {name}, but {root} has no {name}.mp4 (or other video file)")
    capture = cv2.VideoCapture(str(videos[0]))
    real_fps, real_frames = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    if abs(real_fps - fps) > 0.01 or real_frames != frames:
        raise DataError(
            f"{videos[0]} has {real_frames} frames at {real_fps:g} fps, but {path} says {frames} at {fps:g}"
        )
    return AnnotatedStream(name, videos[0], fps, frames, truth, nuisances)


def _spans(entries: Sequence[dict], name: str) -> tuple[Span, ...]:
    return tuple(Span(e[name], float(e["segment"][0]), float(e["segment"][1])) for e in entries)


# ---------------------------------------------------------------------- recording and replaying
@dataclass
class Recording:
    """What the model said for every frame of one stream, before any label policy."""

    stream: AnnotatedStream
    labels: tuple[str, ...]
    probs: np.ndarray  # [frames, classes]: the newest decoder result each frame carries
    window_full: np.ndarray  # [frames] bool
    fresh: np.ndarray  # [frames] bool: a new decoder result arrived with this frame


def record(recognizer, stream: AnnotatedStream) -> Recording:
    """Stream one video through a StreamingRecognizer built with no policy and top_k = all classes."""
    from vtn_edge.sources import open_source

    labels = tuple(recognizer.labels)
    column = {name: i for i, name in enumerate(labels)}
    probs = np.zeros((stream.frames, len(labels)), np.float64)  # exactly what the stabiliser would get
    full = np.zeros(stream.frames, bool)
    fresh = np.zeros(stream.frames, bool)  # where the decoder ran: the stabiliser's updates
    count, received = 0, 0

    def keep(predictions: list[Prediction]) -> None:
        # one prediction per pushed frame, in order; the recognizer's frame indices go on across
        # reset(), so the stream's own frame number is the prediction's position
        nonlocal received
        for p in predictions:
            if received < stream.frames:
                full[received], fresh[received] = p.window_full, p.fresh
                for name, score in p.top_k:
                    probs[received, column[name]] = score
            received += 1

    recognizer.reset()
    with open_source(stream.path) as source:
        for index, frame, _ in source.frames(recognizer.needs_pixels):
            keep(recognizer.push(frame, timestamp=index / stream.fps))
            count += 1
    keep(recognizer.flush())
    if count != stream.frames:
        raise DataError(f"{stream.path} decoded to {count} frames, but its annotation says {stream.frames}")
    return Recording(stream, labels, probs, full, fresh)


@dataclass
class Replay:
    """A label policy played over a recording: per-frame labels and the events the monitor emits."""

    frame_labels: list[str | None]
    events: list[ActionEvent]  # the "end" events (start and end times filled in)


def replay(rec: Recording, policy: LabelPolicy, background: Sequence[str], rules: EventRules = PLAIN_EVENTS) -> Replay:
    stabilizer = LabelStabilizer(policy)
    ended: list[ActionEvent] = []
    tracker = EventTracker(
        rec.stream.name, lambda e: ended.append(e) if e.event == "end" else None, host="", ignore=background,
        rules=rules,
    )  # fmt: skip
    fps, labels = rec.stream.fps, rec.labels
    label, score = None, 0.0
    frame_labels: list[str | None] = []
    for i in range(rec.stream.frames):
        if rec.fresh[i]:
            index, score, _ = stabilizer.update(rec.probs[i], i / fps)
            label = None if index is None else labels[index]
        p = Prediction(
            stream=0, frame_index=i, timestamp=i / fps, label=label, score=score, top_k=(),
            window_full=bool(rec.window_full[i]), latency_ms=0.0,
        )  # fmt: skip
        tracker.update(p)
        frame_labels.append(tracker.label)
    tracker.close(SOURCE_ENDED, when=rec.stream.frames / fps)
    return Replay(frame_labels, ended)


# ---------------------------------------------------------------------- matching and metrics
def iou(a: Span, b: Span) -> float:
    inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    union = max(a.end, b.end) - min(a.start, b.start)
    return inter / union if union > 0 else 0.0


def match(truth: Sequence[Span], predicted: Sequence[Span], threshold: float = IOU) -> list[tuple[int, int]]:
    """(truth index, predicted index) pairs: same label, IoU >= threshold, one-to-one, greedy by IoU."""
    candidates = sorted(
        ((iou(t, p), i, j) for i, t in enumerate(truth) for j, p in enumerate(predicted) if t.label == p.label),
        key=lambda c: -c[0],
    )
    used_t, used_p, pairs = set(), set(), []
    for value, i, j in candidates:
        if value >= threshold and i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
            pairs.append((i, j))
    return pairs


@dataclass
class _Tally:
    truth: int = 0
    predicted: int = 0
    matched: int = 0
    matched_strict: int = 0
    delays: list[float] = field(default_factory=list)  # start published minus annotated start
    start_lags: list[float] = field(default_factory=list)  # estimated start minus annotated start
    end_lags: list[float] = field(default_factory=list)

    def scores(self) -> dict[str, float | int | None]:
        """None where a ratio has nothing to count (no events, or no predictions)."""
        precision, recall = _ratio(self.matched, self.predicted), _ratio(self.matched, self.truth)
        return {
            "event_precision": precision,
            "event_recall": recall,
            "event_f1": _f1(self.truth, self.predicted, self.matched),
            "event_f1_iou50": _f1(self.truth, self.predicted, self.matched_strict),
            "delay_p50_s": _quantile(self.delays, 0.5),
            "delay_p90_s": _quantile(self.delays, 0.9),
            "start_lag_p50_s": _quantile(self.start_lags, 0.5),
            "end_lag_p50_s": _quantile(self.end_lags, 0.5),
            "events": self.truth,
            "predicted": self.predicted,
        }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _quantile(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def event_spans(events: Sequence[ActionEvent]) -> list[Span]:
    return [Span(e.label, e.start_time, e.end_time, e.detected_time) for e in events]


@dataclass(frozen=True)
class StreamCounts:
    """One stream's event counts (IoU 0.3): the overall event F1 is summed from them."""

    name: str
    events: int
    predicted: int
    matched: int


def _counts_table(counts: Sequence[StreamCounts]) -> np.ndarray:
    return np.array([(c.events, c.predicted, c.matched) for c in counts], np.float64).reshape(-1, 3)


def _f1_of_sums(sums: np.ndarray) -> np.ndarray:
    """Event F1 of summed (events, predicted, matched) counts [..., 3]: 2 matched / (events +
    predicted), the F1 of precision and recall; nan where there are neither events nor predictions."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * sums[..., 2] / (sums[..., 0] + sums[..., 1])


def _f1(events: int, predicted: int, matched: int) -> float | None:
    """Event F1 of one set of counts (None: no events and no predictions)."""
    value = float(_f1_of_sums(np.array([events, predicted, matched], np.float64)))
    return None if np.isnan(value) else value


def pooled_f1(counts: Sequence[StreamCounts]) -> float | None:
    """Event F1 over all of `counts`' streams together (None: no events and no predictions)."""
    return _f1(*_counts_table(counts).sum(axis=0))


def f1_interval(
    counts: Sequence[StreamCounts], baseline: Sequence[StreamCounts] | None = None, *,
    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
) -> tuple[float, float] | None:  # fmt: skip
    """The 95% interval of event F1 over `counts`' streams, or with `baseline` (another model on the
    same streams, in the same order) of F1 minus the baseline's F1, paired.

    A percentile bootstrap over streams, not events: the events of one stream share its scene and
    follow one another, so the stream is the independent unit. Each resample sums the counts of
    streams drawn with replacement (the same draws for both runs when paired). None with fewer
    than 2 streams (nothing to resample). Deterministic for a given `seed`.
    """
    if baseline is not None and [c.name for c in counts] != [c.name for c in baseline]:
        raise DataError(
            f"a paired interval needs both runs on the same streams in the same order; got "
            f"{[c.name for c in counts][:3]}... and {[c.name for c in baseline][:3]}..."
        )
    if len(counts) < 2:
        return None
    draws = np.random.default_rng(seed).integers(0, len(counts), size=(resamples, len(counts)))
    values = _f1_of_sums(_counts_table(counts)[draws].sum(axis=1))
    if baseline is not None:
        values = values - _f1_of_sums(_counts_table(baseline)[draws].sum(axis=1))
    if np.isnan(values).all():
        return None
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def score(streams: Sequence[tuple[AnnotatedStream, Replay]]) -> dict:
    """The metrics over all streams, overall and per class (JSON keys as documented)."""
    overall, per_class, counts = _Tally(), {}, []
    idle_s = total_s = 0.0
    frames = correct = flicker = at_nuisances = 0
    false_by_kind = dict.fromkeys(FALSE_KINDS, 0)
    for stream, rep in streams:
        predicted = event_spans(rep.events)
        pairs, strict = match(stream.truth, predicted), match(stream.truth, predicted, IOU_STRICT)
        for tally_of in (lambda _: overall, lambda label: per_class.setdefault(label, _Tally())):
            for t in stream.truth:
                tally_of(t.label).truth += 1
            for p in predicted:
                tally_of(p.label).predicted += 1
            for i, j in pairs:
                tally = tally_of(stream.truth[i].label)
                tally.matched += 1
                tally.delays.append(predicted[j].published - stream.truth[i].start)
                tally.start_lags.append(predicted[j].start - stream.truth[i].start)
                tally.end_lags.append(predicted[j].end - stream.truth[i].end)
            for i, _ in strict:
                tally_of(stream.truth[i].label).matched_strict += 1
        unmatched = set(range(len(predicted))) - {j for _, j in pairs}
        at_nuisances += sum(_at_nuisance(predicted[j], stream.nuisances) for j in unmatched)
        for j in unmatched:
            false_by_kind[false_kind(predicted[j], stream.truth)] += 1
        counts.append(StreamCounts(stream.name, len(stream.truth), len(predicted), len(pairs)))
        total_s += stream.duration
        idle_s += stream.duration - sum(t.end - t.start for t in stream.truth)
        truth_labels = stream.frame_labels()
        frames += stream.frames
        correct += sum(a == b for a, b in zip(truth_labels, rep.frame_labels))
        flicker += max(0, _changes(rep.frame_labels) - _changes(truth_labels))
    result = overall.scores()
    interval = f1_interval(counts)
    false_events = sum(c.predicted - c.matched for c in counts)
    result.update(
        event_f1_ci95=None if interval is None else list(interval),
        false_events=false_events,
        false_by_kind=false_by_kind,
        false_per_hour=false_events / (idle_s / 3600) if idle_s > 0 else None,
        # of the false events, those while an annotated nuisance was in view (None: none annotated)
        false_at_nuisances=at_nuisances if any(stream.nuisances for stream, _ in streams) else None,
        frame_acc=correct / frames if frames else None,
        flicker_per_min=flicker / (total_s / 60) if total_s else None,
        streams=len(streams),
        hours=total_s / 3600,
        per_class={label: per_class[label].scores() for label in sorted(per_class)},
        per_stream=[asdict(c) for c in counts],
    )
    return result


def false_kind(event: Span, truth: Sequence[Span]) -> str:
    """Where an event that matched no annotated action lies (a key of FALSE_KINDS)."""
    overlapping = [t for t in truth if t.start < event.end and event.start < t.end]
    if any(t.label == event.label for t in overlapping):
        return "late_or_split"
    if overlapping:
        return "other_action"
    if any(0 <= event.start - t.end <= AFTER_ACTION_S for t in truth):
        return "after_action"
    return "idle"


def _at_nuisance(event: Span, nuisances: Sequence[Span]) -> bool:
    return any(event.start < n.end + NUISANCE_REACH_S and n.start < event.end for n in nuisances)


def _changes(labels: Sequence[str | None]) -> int:
    return sum(a != b for a, b in zip(labels, labels[1:]))


def evaluate_online(
    recognizer, streams: Sequence[AnnotatedStream], policy: LabelPolicy, background: Sequence[str],
    rules: EventRules = PLAIN_EVENTS, progress: Callable[[str], None] | None = None,
) -> tuple[dict, list[Recording], list[Replay]]:  # fmt: skip
    recordings, replays = [], []
    for i, stream in enumerate(streams):
        if progress is not None:
            progress(f"stream {i + 1}/{len(streams)}: {stream.name} ({stream.duration:.0f} s)")
        recordings.append(record(recognizer, stream))
        replays.append(replay(recordings[-1], policy, background, rules))
    return score(list(zip(streams, replays))), recordings, replays


def fmt_interval(interval: Sequence[float] | None) -> str:
    """A 95% interval in percent, as " (79.0 to 87.5)"; "" when there is none."""
    return "" if interval is None else f" ({100 * interval[0]:.1f} to {100 * interval[1]:.1f})"


def online_table(result: dict) -> str:
    """The overall metrics and a per-class table, as Markdown."""
    from vtn_edge.report import format_table

    def fmt(value: float | None, percent: bool = False) -> str:
        if value is None:
            return "-"
        return f"{100 * value:.1f}" if percent else f"{value:.2f}"

    r = result
    no_ci = " (no CI: one stream)" if r["streams"] < 2 and r["event_f1"] is not None else ""
    head = format_table(
        ["streams", "hours", "events", "precision", "recall", "F1 (95% CI)", "F1@0.5", "delay p50/p90 s",
         "start / end lag p50 s", "false/h idle", "frame acc", "flicker/min"],
        [(r["streams"], f"{r['hours']:.2f}", r["events"], fmt(r["event_precision"], True),
          fmt(r["event_recall"], True), f"{fmt(r['event_f1'], True)}{fmt_interval(r['event_f1_ci95']) or no_ci}",
          fmt(r["event_f1_iou50"], True),
          f"{fmt(r['delay_p50_s'])} / {fmt(r['delay_p90_s'])}",
          f"{fmt(r['start_lag_p50_s'])} / {fmt(r['end_lag_p50_s'])}",
          fmt(r["false_per_hour"]),
          fmt(r["frame_acc"], True), fmt(r["flicker_per_min"]))],
    )  # fmt: skip
    rows = [
        (label, c["events"], c["predicted"], fmt(c["event_precision"], True), fmt(c["event_recall"], True),
         fmt(c["event_f1"], True), fmt(c["delay_p50_s"]))
        for label, c in r["per_class"].items()
    ]  # fmt: skip
    classes = format_table(["class", "events", "predicted", "precision", "recall", "F1", "delay p50 s"], rows)
    if r["false_events"]:
        kinds = "; ".join(f"{n} {FALSE_KINDS[kind]}" for kind, n in r["false_by_kind"].items() if n)
        head += f"\n\nFalse events: {r['false_events']} ({kinds})"
    if r.get("false_at_nuisances") is not None:
        head += (
            "\n\nFalse events while an annotated nuisance (distractor, occlusion, shake) was in view: "
            f"{r['false_at_nuisances']} of {r['false_events']}"
        )
    return f"{head}\n\n{classes}"
