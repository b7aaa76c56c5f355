"""Detection over a video (the optional ``video`` extra, PyAV): frames decoded and batched through the Detector,
one JSON of detections per frame, and an annotated copy of the video.

    video ──PyAV decode──▶ frames RGB uint8 [3, H, W] (every ``every``-th) ──Detector, ``batch`` at a time──▶
        boxes xyxy frame pixels ──▶ ``<stem>.detections.json`` + ``<stem>.annotated.mp4`` (H.264, same fps)

The JSON (written atomically)::

    {"video": str, "fps": float, "width": int, "height": int, "frames": int (decoded), "every": int,
     "class_names": [str], "records": [{"frame": int (0-based index in the video), "time": float (seconds),
     "boxes": [[x1, y1, x2, y2], ...] (frame pixels), "labels": [int], "names": [str], "scores": [float]}]}

The annotated video holds the processed frames, drawn: with ``every=1`` every frame at the source's fps (same frame
count); with ``every=k`` one frame in k at fps / k, so it lasts as long as the source.
"""

from __future__ import annotations

import json
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ssdkit.errors import SSDKitError
from ssdkit.utils import atomic_write_text

__all__ = ["predict_video", "open_video"]

_EXPORTED_SUFFIXES = (".onnx", ".xml", ".pt2")


def _need_av():
    try:
        import av
    except ImportError:
        raise SSDKitError("video input needs PyAV: pip install 'ssdkit[video]'") from None
    return av


def _detector(detector_or_checkpoint: Any):
    from ssdkit.inference import Detector

    if isinstance(detector_or_checkpoint, Detector):
        return detector_or_checkpoint
    if not isinstance(detector_or_checkpoint, (str, os.PathLike)):
        raise SSDKitError(f"detector: expected a Detector or a checkpoint path, got "
                          f"{type(detector_or_checkpoint).__name__}")
    return Detector.from_file(detector_or_checkpoint, preset="visualize")


def open_video(path: str | os.PathLike):
    """``(container, video stream)`` of a readable video; one-line SSDKitError naming the file otherwise."""
    av = _need_av()
    path = Path(path)
    if not path.is_file():
        raise SSDKitError(f"{path}: video file not found")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise SSDKitError(f"{path}: not a readable video ({_first_line(e)})") from None
    if not container.streams.video:
        container.close()
        raise SSDKitError(f"{path}: no video stream in this file")
    return container, container.streams.video[0]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


class _Writer:
    """H.264 (``libx264``; ``mpeg4`` where the FFmpeg build lacks it) writer of RGB uint8 ``[3, H, W]`` frames,
    to a temp name renamed to ``path`` on :meth:`close` (``path`` never holds a half-written video)."""

    def __init__(self, av, path: Path, width: int, height: int, fps: Fraction) -> None:
        self.av, self.path = av, path
        self.tmp = path.with_name(f".{path.name}.tmp.mp4")
        self.container = av.open(str(self.tmp), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2  # yuv420p: even sizes
        self.stream.pix_fmt = "yuv420p"
        self.count = 0

    def write(self, image: torch.Tensor) -> None:
        frame = self.av.VideoFrame.from_ndarray(image.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
        frame = frame.reformat(width=self.stream.width, height=self.stream.height, format="yuv420p")
        frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self, keep: bool = True) -> None:
        try:
            if keep:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
        if keep:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def predict_video(
    detector_or_checkpoint: Any,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    every: int = 1,
    batch: int = 8,
    progress: bool = True,
    write_video: bool = True,
) -> dict[str, Any]:
    """Detect objects in every ``every``-th frame of a video.

    Args:
        detector_or_checkpoint: a :class:`~ssdkit.inference.Detector` (its preset and thresholds apply) or a
            checkpoint path (preset ``visualize``).
        path: the video (anything FFmpeg reads: mp4, mkv, avi, webm, ...).
        out_dir: where ``<stem>.detections.json`` and ``<stem>.annotated.mp4`` go (created if needed).
        every: process one frame in ``every``.
        batch: frames per forward pass.
        progress: a tqdm bar counted in frames, with ETA (total from the container, when it says).
        write_video: also write the annotated video.

    Returns:
        ``{"json": str, "video": str | None, "frames": int (decoded), "processed": int, "fps": float,
        "seconds": float}``.

    Raises:
        SSDKitError: PyAV missing, or the video missing / unreadable / without a video stream (naming the file).
    """
    from tqdm.auto import tqdm

    from ssdkit.viz import draw_detections

    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise SSDKitError(f"every: must be an integer >= 1, got {every!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SSDKitError(f"batch: must be an integer >= 1, got {batch!r}")
    av = _need_av()
    path = Path(path)
    detector = _detector(detector_or_checkpoint)
    container, stream = open_video(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    fps = float(rate)
    width, height = stream.codec_context.width, stream.codec_context.height
    writer = _Writer(av, out / f"{path.stem}.annotated.mp4", width, height, rate / every) if write_video else None
    records: list[dict[str, Any]] = []
    pending: list[tuple[int, float, torch.Tensor]] = []
    bar = tqdm(total=stream.frames or None, unit="frame", desc=path.name, disable=not progress)
    start = time.perf_counter()
    decoded = 0

    def flush() -> None:
        results = detector([img for _, _, img in pending], batch_size=batch)
        for (index, stamp, img), det in zip(pending, results):
            records.append({"frame": index, "time": round(stamp, 6),
                            "boxes": [[round(float(v), 2) for v in b] for b in det["boxes"].tolist()],
                            "labels": det["labels"].tolist(), "names": list(det["names"]),
                            "scores": [round(float(s), 5) for s in det["scores"].tolist()]})
            if writer is not None:
                writer.write(draw_detections(img, det["boxes"], det["labels"], det["scores"], detector.class_names))
        pending.clear()

    ok = False
    try:
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded += 1
                bar.update(1)
                if index % every:
                    continue
                stamp = float(frame.time) if frame.time is not None else index / fps
                pending.append((index, stamp, torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)))
                if len(pending) >= batch:
                    flush()
        except av.FFmpegError as e:
            raise SSDKitError(f"{path}: the video could not be decoded past frame {decoded} ({_first_line(e)})") \
                from None
        if pending:
            flush()
        if decoded == 0:
            raise SSDKitError(f"{path}: the video has no decodable frames")
        ok = True
    finally:
        bar.close()
        container.close()
        if writer is not None:
            writer.close(keep=ok)
    doc = {"video": str(path), "fps": fps, "width": width, "height": height, "frames": decoded, "every": every,
           "class_names": list(detector.class_names), "records": records}
    json_path = out / f"{path.stem}.detections.json"
    atomic_write_text(json_path, json.dumps(doc))
    return {"json": str(json_path), "video": None if writer is None else str(writer.path), "frames": decoded,
            "processed": len(records), "fps": fps, "seconds": round(time.perf_counter() - start, 3)}
