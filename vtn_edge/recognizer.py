"""StreamingRecognizer: a label for every frame, at camera rate, over a one-second window.

Schedule (per stream): every `stride`-th frame is cropped once and sent to the encoder
(OpenVINO AsyncInferQueue, so preprocessing of the next frame overlaps inference); each new
embedding enters a ring buffer of the last `window` embeddings and, once the buffer is full,
the decoder runs over it (over every `decode_every`-th window: fewer labels per second for less
CPU). Frames in between carry their stream's newest result. Until the buffer is full a frame's
label is None (`window_full` False): partial windows are never decoded.

Threads: the caller's thread preprocesses and submits; OpenVINO's callbacks hand embeddings to
one ordering thread, which restores frame order per stream (requests may finish out of order),
runs the small decoder and publishes predictions in frame order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openvino as ov

from vtn_edge.errors import FrameError, VtnEdgeError
from vtn_edge.model import CompileOptions, VtnModel, compile_pair, encoder_requests, load_model, set_shared_inputs
from vtn_edge.preprocess import center_crop_resize, encoder_frame, encoder_request
from vtn_edge.smoothing import LabelPolicy, LabelStabilizer, softmax
from vtn_edge.sources import open_source
from vtn_edge.types import Prediction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Ticket:
    """A pushed frame waiting for its label."""

    index: int
    timestamp: float
    t_push: float
    embedding: int | None  # which embedding this frame waits for (None: carries the newest result)


@dataclass(frozen=True)
class _Result:
    """A stream's newest decoder result, which every frame until the next one carries."""

    label: str | None = None
    score: float = 0.0
    top_k: tuple[tuple[str, float], ...] = ()
    window_full: bool = False


# messages to the ordering thread
@dataclass(frozen=True)
class _Pushed:
    stream: int
    ticket: _Ticket


@dataclass(frozen=True)
class _Encoded:
    stream: int
    k: int  # the stream's k-th embedding since its (re)start
    embedding: np.ndarray


@dataclass(frozen=True)
class _Sync:
    done: threading.Event  # set once everything queued before it has been handled


@dataclass
class _Stream:
    """Per-stream state. `frames`, `submitted` and `previous_crop` belong to the caller's thread; the
    rest to the ordering thread, which restores frame order (requests finish out of order), keeps
    the window and publishes predictions."""

    index: int
    seq_len: int
    dim: int
    policy: LabelPolicy
    decode_every: int = 1  # decode the first full window and every decode_every-th one after it
    frames: int = 0
    submitted: int = 0
    previous_crop: np.ndarray | None = None
    tickets: deque[_Ticket] = field(default_factory=deque)
    arrived: dict[int, np.ndarray] = field(default_factory=dict)
    timestamps: dict[int, float] = field(default_factory=dict)
    processed: int = -1
    ring: np.ndarray | None = None
    result: _Result = _Result()
    decoded: int = -1  # the embedding whose window gave `result`
    ready: deque[Prediction] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Forget the window (frame indices go on). Only while nothing of this stream is in flight."""
        self.submitted, self.processed = 0, -1
        self.previous_crop = None
        self.arrived.clear()
        self.timestamps.clear()
        # each embedding is written twice, so the newest `seq_len` rows are always one contiguous view
        self.ring = np.zeros((2 * self.seq_len, self.dim), np.float32)
        self.stabilizer = LabelStabilizer(self.policy)
        self.result, self.decoded = _Result(), -1

    # ------------------------------------------------------------------ the ordering thread
    def on_pushed(self, ticket: _Ticket, publish: Callable[[Prediction], None]) -> None:
        self.tickets.append(ticket)
        if ticket.embedding is not None:
            self.timestamps[ticket.embedding] = ticket.timestamp
        self._publish_ready(publish)

    def on_encoded(
        self,
        k: int,
        embedding: np.ndarray,
        decode: Callable[[np.ndarray, _Stream, float], _Result],
        publish: Callable[[Prediction], None],
    ) -> None:
        """Embeddings may arrive out of order: decode them in order, publishing as each lands."""
        self.arrived[k] = embedding
        while self.processed + 1 in self.arrived:
            k = self.processed + 1
            window = self._append(k, self.arrived.pop(k))
            timestamp = self.timestamps.pop(k)
            if window is not None and (k + 1 - self.seq_len) % self.decode_every == 0:
                self.result, self.decoded = decode(window, self, timestamp), k
            self.processed = k
            self._publish_ready(publish)  # before a newer result replaces this one

    def _append(self, k: int, embedding: np.ndarray) -> np.ndarray | None:
        """Add embedding k; return the window [1, T, D] once k + 1 >= T, else None."""
        slot = k % self.seq_len
        self.ring[slot] = embedding
        self.ring[slot + self.seq_len] = embedding
        if k + 1 < self.seq_len:
            return None
        start = (k + 1) % self.seq_len
        return self.ring[None, start : start + self.seq_len]

    def _publish_ready(self, publish: Callable[[Prediction], None]) -> None:
        while self.tickets and (self.tickets[0].embedding is None or self.tickets[0].embedding <= self.processed):
            t = self.tickets.popleft()
            r = self.result
            publish(Prediction(
                stream=self.index, frame_index=t.index, timestamp=t.timestamp, label=r.label, score=r.score,
                top_k=r.top_k, window_full=r.window_full, latency_ms=1000 * (time.perf_counter() - t.t_push),
                fresh=t.embedding is not None and t.embedding == self.decoded,
            ))  # fmt: skip


class StreamingRecognizer:
    """Per-frame action labels from a VTN encoder/decoder IR pair.

    >>> with StreamingRecognizer("ir_models/mobilenetv2-rgb-int8") as rec:
    ...     for p in rec.run("video.mp4"):
    ...         print(p.frame_index, p.label, p.score)

    `push(frame)` returns the predictions that became ready (in frame order, possibly for
    earlier frames); `push(frame, wait=True)` waits for this frame's own. `flush()` waits for
    everything pushed. `policy` is one label policy for every stream or a list, one per stream.
    `decode_every=2` runs the decoder on every second window only: a new result every 4th frame
    instead of every 2nd (stride 2), for about a sixth less CPU per camera where the decoder is
    slow (CPUs without VNNI) and about 3 points less event F1 (README); smoothing over `window`
    results then spans twice the time.
    With `on_prediction(fn)`, predictions go to `fn` (called from the ordering
    thread) instead of being queued.
    """

    def __init__(
        self,
        model: str | Path | VtnModel,
        *,
        streams: int = 1,
        options: CompileOptions | None = None,
        policy: LabelPolicy | Sequence[LabelPolicy] | None = None,
        top_k: int = 5,
        requests: int | None = None,
        labels: str | Path | None = None,
        stride: int | None = None,
        decode_every: int = 1,
    ):
        self.model = model if isinstance(model, VtnModel) else load_model(model, labels=labels)
        manifest = self.model.manifest
        self.manifest = manifest
        self.labels = manifest.labels
        self.stride = stride or manifest.stride
        self.top_k = max(1, min(top_k, len(self.labels)))
        self.options = (options or CompileOptions()).for_streams(streams)
        self._pre = manifest.preprocessing
        encoder, decoder = compile_pair(self.model, self.options)
        if requests is None:
            requests = encoder_requests(encoder)
        self._encoder = ov.AsyncInferQueue(encoder, requests)
        self._encoder.set_callback(self._on_encoded)
        self._decoder = decoder.create_infer_request()
        policies = list(policy) if isinstance(policy, Sequence) else [policy or LabelPolicy()] * streams
        if len(policies) != streams:
            raise VtnEdgeError(f"{len(policies)} label policies for {streams} streams: give one, or one per stream")
        if not isinstance(decode_every, int) or decode_every < 1:
            raise VtnEdgeError(f"decode_every must be a whole number >= 1 (1: every window), got {decode_every!r}")
        self.decode_every = decode_every
        self._streams = [
            _Stream(i, manifest.seq_len, manifest.embed_dim, p, decode_every) for i, p in enumerate(policies)
        ]
        self._events: queue.SimpleQueue = queue.SimpleQueue()  # _Pushed / _Encoded / _Sync, None to stop
        self._published = threading.Condition()  # notified when a prediction lands in a stream's `ready`
        self._callback: Callable[[Prediction], None] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._worker = threading.Thread(target=self._order_loop, name="vtn-order", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ public API
    @property
    def num_streams(self) -> int:
        return len(self._streams)

    def on_prediction(self, callback: Callable[[Prediction], None] | None) -> None:
        self._callback = callback

    def push(
        self, frame: np.ndarray | None, *, stream: int = 0, timestamp: float | None = None, wait: bool = False
    ) -> list[Prediction]:
        """Classify one frame (BGR uint8; gray, BGRA and 16-bit are converted).

        `frame=None` is allowed for frames the schedule does not encode (see `needs_pixels`),
        which saves decoding them to pixels at all.
        """
        self._check_open()
        st = self._stream(stream)
        t_push = time.perf_counter()
        index = st.frames
        sampled = index % self.stride == 0
        if sampled:
            if frame is None:
                raise FrameError(f"frame {index} of stream {stream} is encoded by the schedule and cannot be None")
            crop = self._crop(frame)
        elif frame is not None and (not isinstance(frame, np.ndarray) or frame.size == 0):
            raise FrameError(f"empty frame: expected an HxWx3 uint8 BGR image, got {type(frame).__name__}")
        st.frames += 1
        ts = timestamp if timestamp is not None else time.monotonic()
        k = None
        if sampled:
            previous, st.previous_crop = st.previous_crop, crop
            inputs = encoder_request(crop, previous, self.manifest)
            if inputs is not None:
                k = st.submitted
                st.submitted += 1
        self._events.put(_Pushed(stream, _Ticket(index, ts, t_push, k)))
        if k is not None:
            self._submit(inputs, (stream, k, inputs))
        if wait:
            self._wait_for(st, index)
        return self._drain(st)

    def needs_pixels(self, stream: int = 0) -> bool:
        """Whether the next frame of `stream` will be encoded (so must be decoded to pixels)."""
        return self._stream(stream).frames % self.stride == 0

    def flush(self, stream: int | None = None, timeout: float = 30.0) -> list[Prediction]:
        """Wait until every pushed frame has its prediction; return those not yet handed out."""
        self._check_open()
        self._encoder.wait_all()
        done = threading.Event()
        self._events.put(_Sync(done))
        if not done.wait(timeout):
            raise VtnEdgeError(f"predictions did not arrive within {timeout} s")
        self._raise_worker_error()
        if stream is None:
            return [p for st in self._streams for p in self._drain(st)]
        return self._drain(self._stream(stream))

    def reset(self, stream: int = 0) -> list[Prediction]:
        """Start `stream` afresh, e.g. after its camera reconnected: later frames never share a window
        with earlier ones, and the label is None until the window is full again. Frame indices go on.
        Returns the predictions that were still pending for it."""
        pending = self.flush(stream)
        self._stream(stream).restart()  # safe: flush() left nothing of it in flight
        return pending

    def run(self, source: str | int | Path, *, stream: int = 0, loop: bool = False) -> Iterator[Prediction]:
        """Predictions for every frame of an OpenCV source (file, camera index, URL), in order."""
        with open_source(source, loop=loop) as src:
            for _, frame, timestamp in src.frames(lambda: self.needs_pixels(stream)):
                yield from self.push(frame, stream=stream, timestamp=timestamp)
        yield from self.flush(stream)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._encoder.wait_all()
        finally:
            self._events.put(None)
            self._worker.join(timeout=10)

    def __enter__(self) -> StreamingRecognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the caller's thread
    def _crop(self, frame: np.ndarray) -> np.ndarray:
        return encoder_frame(center_crop_resize(frame, self._pre), self.manifest.interface)

    def _submit(self, inputs: tuple[np.ndarray, ...], userdata: tuple) -> None:
        """Start the encoder on `inputs`, shared, not copied: they go onto the request that
        start_async takes next (the queue's first idle one, as OpenVINO's own start_async picks it)."""
        set_shared_inputs(self._encoder[self._encoder.get_idle_request_id()], inputs)  # waits while all are busy
        self._encoder.start_async(userdata=userdata)

    def _stream(self, stream: int) -> _Stream:
        if not 0 <= stream < len(self._streams):
            raise VtnEdgeError(
                f"stream {stream} does not exist: this recognizer has streams 0..{len(self._streams) - 1}"
            )
        return self._streams[stream]

    def _drain(self, st: _Stream) -> list[Prediction]:
        self._raise_worker_error()
        out = []
        while st.ready:
            out.append(st.ready.popleft())
        return out

    def _wait_for(self, st: _Stream, index: int, timeout: float = 30.0) -> None:
        if self._callback is not None:  # predictions go to the callback, not to `ready`
            return
        with self._published:
            self._published.wait_for(
                lambda: self._error is not None or (st.ready and st.ready[-1].frame_index >= index), timeout
            )

    def _check_open(self) -> None:
        if self._closed:
            raise VtnEdgeError("this StreamingRecognizer is closed")

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise VtnEdgeError(f"inference failed: {self._error}") from self._error

    # ------------------------------------------------------------------ OpenVINO's threads
    def _on_encoded(self, request: ov.InferRequest, userdata: tuple) -> None:
        stream, k, _inputs = userdata  # _inputs kept alive until here (shared, not copied)
        self._events.put(_Encoded(stream, k, request.get_output_tensor(0).data.reshape(-1).copy()))

    # ------------------------------------------------------------------ the ordering thread
    def _order_loop(self) -> None:
        while True:
            message = self._events.get()
            if message is None:
                return
            try:
                self._handle(message)
            except BaseException as exc:  # surfaced to the caller on its next call
                log.exception("ordering thread failed")
                self._error = exc
                with self._published:
                    self._published.notify_all()

    def _handle(self, message: _Pushed | _Encoded | _Sync) -> None:
        if isinstance(message, _Sync):
            message.done.set()
        elif isinstance(message, _Pushed):
            self._streams[message.stream].on_pushed(message.ticket, self._publish)
        else:
            self._streams[message.stream].on_encoded(message.k, message.embedding, self._decode, self._publish)

    def _decode(self, window: np.ndarray, st: _Stream, timestamp: float) -> _Result:
        set_shared_inputs(self._decoder, [window])  # a view of the ring
        self._decoder.infer()
        logits = self._decoder.get_output_tensor(0).data.reshape(-1)
        probs = softmax(logits.astype(np.float64))
        label_index, score, smoothed = st.stabilizer.update(probs, timestamp)
        top = np.argsort(-smoothed)[: self.top_k]
        top_k = tuple((self.labels[i], float(smoothed[i])) for i in top)
        label = None if label_index is None else self.labels[label_index]
        return _Result(label, score, top_k, window_full=True)

    def _publish(self, prediction: Prediction) -> None:
        if self._callback is not None:
            self._callback(prediction)
            return
        with self._published:
            self._streams[prediction.stream].ready.append(prediction)
            self._published.notify_all()
