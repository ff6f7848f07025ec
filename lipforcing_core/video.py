"""Video and audio I/O with PyAV: read frames + audio, resample to the model's 25 fps and back, and
write H.264/yuv420p mp4 files with the audio muxed in.

* Frames are uint8 RGB ``[T,H,W,3]``; audio is float32 ``[C,N]`` in [-1,1] at its own sample rate,
  trimmed or zero-padded so that sample 0 lines up with the first video frame.
* Frame-rate conversion is nearest-frame by timestamp: output frame ``j`` (at ``j/fps``) shows the
  source frame whose timestamp is closest. No blending, so every output frame is a real frame and the
  mapping back (25 fps -> source rate) is the same rule with the roles swapped. Audio is untouched:
  both streams keep their real time, so they stay in sync.
* Variable-frame-rate input is accepted: frames keep their real timestamps (``Video.timestamps``),
  ``Video.variable_frame_rate`` flags it, and ``convert_fps`` turns it into a constant rate.
* A clip without an audio stream reads with ``audio=None`` (``read_video(..., require_audio=True)``
  turns that into an error); ``write_video`` then writes a silent mp4.
* Sources are paths or binary file objects (ComfyUI's VIDEO type hands out either); ``stream_frames``
  decodes one frame at a time and converts the rate on the fly with the same rule as ``convert_fps``,
  so a whole clip is never held in memory.
* Writes are atomic (``atomic.atomic_output``: a temporary file in the same folder, renamed when
  complete, removed on failure or SIGTERM) and never replace an existing file unless ``overwrite=True``
  -- so an input clip is never clobbered by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, TypeVar

import av
import numpy as np

from .atomic import atomic_output
from .config import FPS as MODEL_FPS  # the rate frames are converted to for the models
from .errors import InputError

_VFR_TOLERANCE = 0.25  # a frame interval off the nominal one by more than this share -> VFR

MediaSource = str | Path | BinaryIO
T = TypeVar("T")


class VideoError(InputError):
    """A video file that cannot be used: unreadable, corrupt, no frames, no audio when required."""


@dataclass
class Video:
    """A decoded clip. ``timestamps`` are seconds from the first frame."""

    frames: np.ndarray  # [T,H,W,3] uint8 RGB
    fps: float
    audio: np.ndarray | None  # [C,N] float32, sample 0 at the first frame; None if the clip is silent
    sample_rate: int | None
    timestamps: np.ndarray  # [T] float64

    @property
    def duration(self) -> float:
        """Seconds covered by the frames (last timestamp plus one nominal frame)."""
        return float(self.timestamps[-1]) + 1.0 / self.fps if len(self.timestamps) else 0.0

    @property
    def variable_frame_rate(self) -> bool:
        steps = np.diff(self.timestamps)
        return bool(len(steps) and np.abs(steps * self.fps - 1.0).max() > _VFR_TOLERANCE)


def source_name(source: MediaSource) -> str:
    """How error messages name a media source."""
    return str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "<in-memory video>")


def _open_media(source: MediaSource) -> av.container.InputContainer:
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"media file {source}: no such file")
    else:
        source.seek(0)
    try:
        return av.open(source if not isinstance(source, Path) else str(source))
    except av.error.FFmpegError as err:
        raise VideoError(f"media file {source_name(source)}: cannot be opened ({err}); is it a valid video/audio "
                         "file?") from err


def _open(source: MediaSource) -> av.container.InputContainer:
    container = _open_media(source)
    if not container.streams.video:
        container.close()
        raise VideoError(f"video {source_name(source)}: has no video stream")
    return container


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise VideoError(f"video stream of {stream.container.name}: frame rate unknown")
    return float(rate)


def iter_frames(path: MediaSource, *, size: tuple[int, int] | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_in_seconds, uint8 RGB frame)``; ``size=(width, height)`` rescales while decoding."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = size if size else (None, None)
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    raise VideoError(f"video {source_name(path)}: frame without a timestamp")
                yield frame.time, frame.to_ndarray(format="rgb24", width=width, height=height)
        except av.error.FFmpegError as err:
            raise VideoError(f"video {source_name(path)}: decoding failed ({err}); the file may be corrupt or "
                             "truncated") from err


def read_audio(path: MediaSource, start_time: float = 0.0) -> tuple[np.ndarray | None, int | None]:
    """The first audio stream of a video or audio file as float32 ``[C,N]`` with sample 0 at
    ``start_time`` (seconds), or (None, None) when there is none."""
    with _open_media(path) as container:
        if not container.streams.audio:
            return None, None
        stream = container.streams.audio[0]
        rate = stream.rate
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
        chunks, first = [], None
        try:
            for frame in container.decode(stream):
                if first is None and frame.time is not None:
                    first = frame.time
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
        except av.error.FFmpegError as err:
            raise VideoError(f"audio of {source_name(path)}: decoding failed ({err})") from err
    if not chunks:
        return None, None
    audio = np.concatenate(chunks, axis=1).astype(np.float32)
    offset = round(((first or 0.0) - start_time) * rate)
    if offset > 0:
        audio = np.pad(audio, ((0, 0), (offset, 0)))
    elif offset < 0:
        audio = audio[:, -offset:]
    return audio, rate


def read_video(path: str | Path, *, size: tuple[int, int] | None = None, max_frames: int | None = None,
               require_audio: bool = False) -> Video:
    """Decode a clip (all frames, or the first ``max_frames``) and its audio."""
    with _open(path) as container:
        fps = _stream_fps(container.streams.video[0])
    frames, times = [], []
    for t, frame in iter_frames(path, size=size):
        if max_frames is not None and len(frames) >= max_frames:
            break
        frames.append(frame)
        times.append(t)
    if not frames:
        raise VideoError(f"video {path}: no decodable frames")
    audio, rate = read_audio(path, start_time=times[0])
    if audio is None and require_audio:
        raise VideoError(f"video {path}: has no audio stream (give a separate audio file)")
    return Video(np.stack(frames), fps, audio, rate, np.asarray(times, np.float64) - times[0])


@dataclass(frozen=True)
class VideoProbe:
    """What the first decoded frame tells: the nominal rate, the frame size, the first timestamp."""

    fps: float
    width: int
    height: int
    start_time: float


def probe_video(source: MediaSource) -> VideoProbe:
    """Rate, size and start time of a clip, from its first frame; a clear error if it has none."""
    with _open(source) as container:
        fps = _stream_fps(container.streams.video[0])
    frames = iter_frames(source)
    first = next(frames, None)
    frames.close()
    if first is None:
        raise VideoError(f"video {source_name(source)}: no decodable frames")
    return VideoProbe(fps, first[1].shape[1], first[1].shape[0], first[0])


def stream_frames(source: MediaSource, fps: float = MODEL_FPS) -> Iterator[np.ndarray]:
    """The clip's frames at a constant ``fps``, decoded one at a time (the ``convert_fps`` rule)."""
    with _open(source) as container:
        source_fps = _stream_fps(container.streams.video[0])
    frames = iter_frames(source)
    try:
        yield from resample_stream(frames, fps, source_fps)
    finally:
        frames.close()  # a file object can then be opened again at once


def resample_stream(timed: Iterable[tuple[float, T]], fps: float, source_fps: float) -> Iterator[T]:
    """``convert_fps`` on a stream of ``(time, item)``: for ``j = 0, 1, ...`` the item nearest ``j / fps``
    (ties -> the earlier one), ``round(duration * fps)`` items in all, holding two items at a time."""
    items = iter(timed)
    first = next(items, None)
    if first is None:
        return
    t0 = first[0]

    def step():
        nxt = next(items, None)
        return None if nxt is None else (nxt[0] - t0, nxt[1])

    prev, cur, j = (0.0, first[1]), step(), 0
    while True:
        target = j / fps
        while cur is not None and cur[0] <= target:
            prev, cur = cur, step()
        if cur is None:
            if j >= max(1, round((prev[0] + 1.0 / source_fps) * fps)):
                return
            yield prev[1]
        else:
            yield prev[1] if target - prev[0] <= cur[0] - target else cur[1]
        j += 1


def frame_times(n: int, fps: float) -> np.ndarray:
    """Timestamps of ``n`` frames at a constant ``fps``."""
    return np.arange(n, dtype=np.float64) / fps


def nearest_indices(source_times: np.ndarray, target_times: np.ndarray) -> np.ndarray:
    """For each target time, the index of the source frame with the closest timestamp (ties -> earlier)."""
    source_times = np.asarray(source_times, np.float64)
    right = np.clip(np.searchsorted(source_times, target_times), 1, len(source_times) - 1) if len(source_times) > 1 \
        else np.zeros(len(target_times), int)
    if len(source_times) == 1:
        return right
    left = right - 1
    closer_left = (target_times - source_times[left]) <= (source_times[right] - target_times)
    return np.where(closer_left, left, right)


def frames_at(frames: np.ndarray, fps: float, timestamps: np.ndarray) -> np.ndarray:
    """Frames of a constant-``fps`` clip shown at ``timestamps`` (nearest frame): maps the model's
    25 fps output back onto the source clip's own timestamps."""
    return frames[nearest_indices(frame_times(len(frames), fps), timestamps)]


def convert_fps(video: Video, fps: float = MODEL_FPS) -> tuple[Video, np.ndarray]:
    """Resample to a constant ``fps`` (nearest frame by timestamp); returns the new clip and, for each
    new frame, the source frame index. The frame count is ``round(duration * fps)``; audio is kept."""
    n = max(1, round(video.duration * fps))
    times = frame_times(n, fps)
    idx = nearest_indices(video.timestamps, times)
    return replace(video, frames=video.frames[idx], fps=float(fps), timestamps=times), idx


def _even_pad(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: replicate the last row/column when a side is odd."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


def write_video(path: str | Path, frames: np.ndarray | Iterable[np.ndarray], fps: float,
                audio: np.ndarray | None = None, sample_rate: int | None = None, *,
                crf: int = 18, overwrite: bool = False) -> Path:
    """Write uint8 RGB frames as H.264 (yuv420p) mp4 with optional float ``[C,N]`` audio (AAC, 1 or 2
    channels) starting at the first frame. Atomic; refuses to replace an existing file unless
    ``overwrite``. Odd frame sides are padded by one replicated row/column."""
    path = Path(path)
    if audio is not None:
        audio = np.atleast_2d(np.asarray(audio, np.float32))
        if audio.shape[0] not in (1, 2) or not sample_rate:
            raise ValueError(f"write_video {path}: audio must be [1 or 2 channels, N] with a sample_rate, "
                             f"got shape {audio.shape} at {sample_rate}")
    with atomic_output(path, overwrite) as tmp:
        _encode(str(tmp), frames, fps, audio, sample_rate, crf)
    return path


def _encode(tmp: str, frames: Iterable[np.ndarray], fps: float, audio: np.ndarray | None,
            sample_rate: int | None, crf: int) -> None:
    with av.open(tmp, "w", format="mp4") as out:
        vstream = None
        astream = out.add_stream("aac", rate=sample_rate, layout="mono" if audio.shape[0] == 1 else "stereo") \
            if audio is not None else None
        for frame in frames:
            frame = _even_pad(np.ascontiguousarray(frame, dtype=np.uint8))
            if vstream is None:
                vstream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001000))
                vstream.height, vstream.width = frame.shape[:2]
                vstream.pix_fmt = "yuv420p"
                vstream.options = {"crf": str(crf)}
            out.mux(vstream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        if vstream is None:
            raise ValueError("write_video: no frames to write")
        out.mux(vstream.encode(None))
        if astream is not None:
            _encode_audio(out, astream, audio)


def _encode_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, audio: np.ndarray) -> None:
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    chunk = 1024
    for start in range(0, audio.shape[1], chunk):
        piece = np.ascontiguousarray(audio[:, start:start + chunk])
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
        frame.sample_rate = stream.rate
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
