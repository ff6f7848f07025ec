"""Lip sync a video source into an mp4, streaming: the one orchestration behind ``sync`` and the nodes.

decode one frame at a time (converted to 25 fps on the fly) -> detect and align the face (causal
smoothing, :class:`~lipforcing_core.face.align.FaceTracker`) -> :meth:`LipSyncPipeline.stream`
pulls the aligned faces chunk by chunk -> each generated chunk is pasted back into its frames ->
encoded and muxed as it comes. Only one chunk of full frames is held at a time, so memory does not
grow with the clip and the first frame is out after the first chunk, whatever the clip's length.

Length: the output has ``round(audio seconds x 25)`` frames and carries the whole driving audio.
The model generates whole chunks, so the audio is padded with silence to the next chunk boundary
and the extra frames are dropped. The video is cut to the audio or, when shorter, extended by
ping-pong; the extension reads the clip again into a temporary file, so memory stays flat.

Faces: a frame where the face is not found is passed through untouched and counted (the model
still gets the last aligned face as its input, so its context is unbroken); a face that appears
mid-clip is picked up from that frame (frames before it give the model the first face); a clip
without the face anywhere is a one-line error from a detection-only pass that stops at the first
face, made when the job is opened, before any model is needed.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import encode_audio, resample
from .config import FPS
from .face.align import RESOLUTION, FaceTracker, first_face
from .face.mask import MASK_GRID, load_mouth_mask
from .face.paste import face_tensor, paste_face_into
from .pipeline import (
    LipSyncPipeline,
    SourceFrames,
    StageTimer,
    chunk_frames,
    frames_to_uint8,
    pingpong_indices,
)
from .vae.wan_vae import TIME_FACTOR
from .video import (
    MediaSource,
    VideoError,
    probe_video,
    read_audio,
    source_name,
    stream_frames,
    write_video,
)

STAGES = ("decode", "face", "generate", "paste", "encode")  # the per-frame costs a job reports
TRACK_RATE = 48000  # the lowest sample rate of the output's audio track


def mono_or_stereo(audio: np.ndarray) -> np.ndarray:
    """``[C, N]`` float audio with at most 2 channels (more are mixed down to mono)."""
    return audio if audio.shape[0] <= 2 else audio.mean(0, keepdims=True)


def padded_length(frames: int, chunk_size: int = 3) -> int:
    """The fewest frames the model generates to cover ``frames``: ``1 + 4 (L - 1)``, ``L`` whole chunks."""
    latent = math.ceil((1 + math.ceil((max(frames, 1) - 1) / TIME_FACTOR)) / chunk_size) * chunk_size
    return 1 + TIME_FACTOR * (latent - 1)


@dataclass
class LipSyncModel:
    """What generates the mouths, and how they are put back.

    ``model_mask`` is the keep-mask (1 = keep) handed to the pipeline (any size with the face's
    aspect: the release's 256 grid, the demo's face size); ``paste_mask`` the keep-mask at the face
    size for the mouth composite. ``mouth_only`` limits the paste in the frame to the mouth (for
    models whose faces are too small to stand in for a whole face: the 64x64 demo model)."""

    pipeline: LipSyncPipeline
    encoder: torch.nn.Module  # audio front end for encode_audio (wav2vec2, the demo's log-mel)
    model_mask: np.ndarray
    paste_mask: np.ndarray
    mouth_only: bool = False
    text: torch.Tensor | None = None
    seed: int = 42

    @classmethod
    def for_faces(cls, pipeline: LipSyncPipeline, encoder: torch.nn.Module, face_size: int,
                  mask: str | Path | None = None, **kwargs) -> LipSyncModel:
        """The masks and paste for ``face_size``: the released models (512) take the mask on its own
        256 grid and replace the whole aligned face; smaller faces (the demo model's 64) take it at
        their size and replace only the mouth. ``mask``: a LatentSync mask.png (default: built in)."""
        keep = load_mouth_mask(mask, face_size)
        if face_size >= RESOLUTION:
            return cls(pipeline, encoder, load_mouth_mask(mask, MASK_GRID), keep, **kwargs)
        return cls(pipeline, encoder, keep, keep, mouth_only=True, **kwargs)


class LazyFaces(SourceFrames):
    """The aligned faces for :meth:`LipSyncPipeline.stream`, made from the source frames only when the
    pipeline asks for them (in order). Each full frame waits in ``pending`` with its aligned face and
    matrix (None: no face) until its generated face is pasted back."""

    def __init__(self, frames: Iterator[np.ndarray], tracker: FaceTracker, length: int, timer: StageTimer):
        self.source, self.tracker, self.timer = frames, tracker, timer
        self.channels_last, self.batch, self.num_frames = True, 1, length
        self.size = (tracker.size, tracker.size)
        self.indices = np.arange(length)
        self.pending: deque = deque()
        self.served = 0

    def pixels(self, frames: slice, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
               ) -> torch.Tensor:
        """The aligned faces of ``frames`` (the next ones in order) as :meth:`SourceFrames.pixels` gives them."""
        start, stop, _ = frames.indices(self.num_frames)
        if start != self.served:
            raise ValueError(f"LazyFaces serves frames in order: asked for {start}, next is {self.served}")
        crops = []
        for _ in range(start, stop):
            with self.timer.stage("decode"):
                frame = next(self.source)
            with self.timer.stage("face"):
                crop, m16 = self.tracker(frame)
            self.pending.append((frame, crop, m16))
            crops.append(crop)
        self.served = stop
        return SourceFrames(np.stack(crops)).pixels(slice(None), device, dtype)

    def take(self, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """The oldest ``count`` pending frames, in order."""
        return [self.pending.popleft() for _ in range(count)]


def served_frames(open_frames: Callable[[], Iterator[np.ndarray]], n: int, wanted: int, report: dict
                  ) -> Iterator[np.ndarray]:
    """``n`` frames of the clip: cut, or ping-pong extended when shorter. ``report['video_adjust']``
    says which, relative to the ``wanted`` output frames (the rest is padding to whole chunks)."""
    frames, count = open_frames(), 0
    for frame in frames:
        count += 1
        if count == n:
            more = next(frames, None) is not None or n > wanted
            report["video_adjust"] = "cut" if more else "none"
            _close(frames)
            yield frame
            return
        yield frame
    report["video_frames_25fps"] = count
    report["video_adjust"] = "ping-pong extended" if count < wanted else "cut" if count > wanted else "none"
    yield from _pingpong_tail(open_frames, count, n)


def _close(frames: Iterator) -> None:
    """Stop a frame iterator early (closes its file when it is a generator over one)."""
    if hasattr(frames, "close"):
        frames.close()


def _pingpong_tail(open_frames: Callable[[], Iterator[np.ndarray]], count: int, n: int) -> Iterator[np.ndarray]:
    """Frames ``count .. n`` of the ping-pong extension of a ``count``-frame clip, from a temporary file."""
    with tempfile.TemporaryFile(prefix="lipforcing-frames-") as spill:
        shape = None
        frames = open_frames()
        for frame in itertools.islice(frames, count):
            spill.write(np.ascontiguousarray(frame).tobytes())
            shape = frame.shape
        _close(frames)
        size = int(np.prod(shape))
        for i in pingpong_indices(count, n)[count:]:
            spill.seek(int(i) * size)
            yield np.frombuffer(spill.read(size), np.uint8).reshape(shape).copy()


class StreamJob:
    """One clip to lip sync: ``job = StreamJob(...)`` checks the inputs and finds the first face (no
    model needed yet), then ``job.run(model, output)`` streams it into an mp4.

    ``open_frames()`` returns a fresh iterator over the clip's frames at 25 fps (uint8 RGB; called
    again for the face search and a ping-pong extension); ``waveform [C, N]`` at ``sample_rate``
    is the whole driving audio."""

    def __init__(self, open_frames: Callable[[], Iterator[np.ndarray]], waveform: np.ndarray, sample_rate: int,
                 tracker: FaceTracker, name: str = "clip"):
        self.open_frames, self.tracker, self.name = open_frames, tracker, name
        self.waveform, self.sample_rate = mono_or_stereo(np.atleast_2d(np.asarray(waveform, np.float32))), sample_rate
        self.audio_seconds = self.waveform.shape[1] / sample_rate
        self.frames = max(1, round(self.audio_seconds * FPS))
        frames = open_frames()
        try:
            self.first_face_frame, tracker.last_crop = first_face(tracker, frames, name)
        finally:
            _close(frames)

    def track(self) -> tuple[np.ndarray, int]:
        """The output's audio track: the whole driving audio, at 48 kHz when it is at a lower rate (AAC
        rounds a track up to whole 1024-sample frames: 21 ms at 48 kHz, 64 ms at the 16 kHz of speech)."""
        if self.sample_rate >= TRACK_RATE:
            return self.waveform, self.sample_rate
        return resample(torch.from_numpy(self.waveform), self.sample_rate, TRACK_RATE).numpy(), TRACK_RATE

    def generated_frames(self, chunk_size: int = 3) -> int:
        """The frames the model generates for this clip: the output padded to whole chunks."""
        return padded_length(max(self.frames, chunk_frames(0, chunk_size)[1]), chunk_size)

    def chunks(self, chunk_size: int = 3) -> int:
        """How many chunks the job generates (progress bars)."""
        return (1 + (self.generated_frames(chunk_size) - 1) // TIME_FACTOR) // chunk_size

    def features(self, model: LipSyncModel, frames: int) -> torch.Tensor:
        """Per-frame audio features for ``frames`` frames: the audio padded with silence to cover them."""
        need = math.ceil(frames / FPS * self.sample_rate) + 1
        padded = np.pad(self.waveform, ((0, 0), (0, max(0, need - self.waveform.shape[1]))))
        return encode_audio(model.encoder, torch.from_numpy(padded), self.sample_rate, num_frames=frames)

    def run(self, model: LipSyncModel, output: str | Path, *, overwrite: bool = False,
            on_chunk: Callable[[int, int, float], None] | None = None, writer: Callable = write_video) -> dict:
        """Stream the clip into ``output``; returns the summary (lengths, faces, times).

        ``on_chunk(done, total, fps)`` is called after every chunk (a progress line or bar);
        ``writer`` has :func:`~lipforcing_core.video.write_video`'s signature and consumes the frames."""
        timer, began = StageTimer(), time.perf_counter()
        chunk = model.pipeline.sampler.chunk_size
        generated = self.generated_frames(chunk)
        report = {"frames": self.frames, "fps": FPS, "audio_seconds": round(self.audio_seconds, 3),
                  "generated_frames": generated, "first_face_frame": self.first_face_frame}
        with timer.stage("audio"):
            features = self.features(model, generated)
        faces = LazyFaces(served_frames(self.open_frames, generated, self.frames, report), self.tracker, generated,
                          timer)
        state = {"with_face": 0, "ttff": None, "end": None}
        frames = self._frames_out(model, faces, features, timer, began, state, on_chunk)
        out = writer(output, frames, FPS, *self.track(), overwrite=overwrite)
        total = time.perf_counter() - began
        timer.seconds["encode"] = timer.seconds.get("encode", 0.0) + time.perf_counter() - state["end"]
        report |= {"output": str(out), "faces_found": state["with_face"],
                   "frames_without_face": self.frames - state["with_face"], "seconds": round(total, 3),
                   "fps_end_to_end": round(self.frames / total, 3), "ttff_s": round(state["ttff"], 3),
                   "ms_per_frame": {k: round(1000 * timer.seconds.get(k, 0.0) / self.frames, 2) for k in STAGES},
                   "audio_features_s": round(timer.seconds["audio"], 3)}
        return report

    def _frames_out(self, model: LipSyncModel, faces: LazyFaces, features: torch.Tensor, timer: StageTimer,
                    began: float, state: dict, on_chunk) -> Iterator[np.ndarray]:
        """The composited output frames, chunk by chunk; time spent by the consumer counts as encoding."""
        pipe, done = model.pipeline, 0
        keep = torch.from_numpy(np.asarray(model.paste_mask, np.float32))
        mouth = 1 - keep if model.mouth_only else None
        total = self.chunks(pipe.sampler.chunk_size)
        stream = pipe.stream(faces, features, model.model_mask, text=model.text, seed=model.seed)
        while done < self.frames:
            before = timer.seconds.get("decode", 0.0) + timer.seconds.get("face", 0.0)
            start = time.perf_counter()
            with torch.no_grad():
                out = next(stream)
            pulled = timer.seconds.get("decode", 0.0) + timer.seconds.get("face", 0.0) - before  # frames read meanwhile
            timer.seconds["generate"] = timer.seconds.get("generate", 0.0) + time.perf_counter() - start - pulled
            for (frame, crop, m16), face in zip(faces.take(out.frames.shape[2]), frames_to_uint8(out.frames)[0],
                                                strict=True):
                if done == self.frames:
                    break
                if m16 is not None:
                    with timer.stage("paste"):
                        paste_face_into(frame, face_tensor(face, keep, crop), m16, mouth)
                    state["with_face"] += 1
                if state["ttff"] is None:
                    state["ttff"] = time.perf_counter() - began
                handed = time.perf_counter()
                yield frame
                timer.seconds["encode"] = timer.seconds.get("encode", 0.0) + time.perf_counter() - handed
                done += 1
            if on_chunk is not None:
                on_chunk(out.index + 1, total, done / (time.perf_counter() - began))
        stream.close()
        state["end"] = time.perf_counter()


def video_job(video: MediaSource, tracker: FaceTracker, waveform: np.ndarray | None = None,
              sample_rate: int | None = None) -> StreamJob:
    """The job for a video file or file object; the driving audio defaults to the video's own track."""
    if waveform is None:
        waveform, sample_rate = read_audio(video, probe_video(video).start_time)
        if waveform is None:
            raise VideoError(f"video {source_name(video)}: has no audio stream (give the driving audio)")
    return StreamJob(lambda: stream_frames(video), waveform, sample_rate, tracker, source_name(video))
