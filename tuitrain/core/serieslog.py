"""The append-only series log: a run's per-step metrics, beside its JSON record.

Framing as in LevelDB's log and TFRecord: after an 8-byte file header (magic and format version), the file is a
sequence of frames, each `length (u32 LE) | crc (u32 LE) | payload[length]`, where crc is the CRC-32 of the
length bytes and the payload (so a torn or garbage length is caught too). A writer only appends; a frame
that a crash or a full disk cut short (a torn tail) fails its length or its checksum, and a reader stops
there: every frame before it is read. A writer that reopens a log cuts such a tail off before appending.

A payload holds a chunk of steps, column by column, self-described (no state across frames):
`count (u16)`, then per series: `name length (u16) | name (UTF-8) | n (u32) | steps (n x i64) | values
(n x f64)`. The bytes a chunk costs depend only on its own steps, never on the run's length.

Rewinds: a series' steps increase from frame to frame, except where a run went back: resumed from an earlier
checkpoint than its last logged step (the steps trained after it, then lost, are trained again), or restarted from
step 0. Such a frame's first step for a series is at or below that series' last step read: it REWINDS the series,
and readers drop that series' points from that step on before adding the frame's. The file stays append-only (what
was written is never rewritten), and the points a reader keeps are the run's last life's, without duplicate steps.

Readers tail by byte offset: SeriesReader.read_new() reads only what was appended since its last call.
Torch-free; numpy decodes.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuitrain.core.errors import RecordError

LOG_FORMAT_VERSION = 1
"""Version of the log's framing and payload; readers refuse newer versions."""
MAGIC = b"TTSL"
"""First bytes of a series log."""
FILE_HEADER = struct.Struct("<4sI")
"""magic, format version."""
FRAME_HEADER = struct.Struct("<II")
"""payload length, CRC-32 of (length bytes + payload)."""
MAX_FRAME = 1 << 28
"""A larger length is garbage (a torn header), not a frame."""
SERIES_SUFFIX = ".series"
"""The log's file name: the run file's, with this suffix in place of .json."""

_COUNT = struct.Struct("<H")
_NAME_LEN = struct.Struct("<H")
_N = struct.Struct("<I")


def series_path_for(run_file: Path) -> Path:
    return Path(run_file).with_suffix(SERIES_SUFFIX)


def _crc(header_length: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(header_length))


def encode_chunk(columns: Mapping[str, tuple[Sequence[int], Sequence[float]]]) -> bytes:
    """One frame's payload: each series' steps and values of this chunk."""
    parts = [_COUNT.pack(len(columns))]
    for name, (steps, values) in columns.items():
        encoded = name.encode("utf-8")
        parts.append(_NAME_LEN.pack(len(encoded)))
        parts.append(encoded)
        parts.append(_N.pack(len(steps)))
        parts.append(np.asarray(steps, dtype="<i8").tobytes())
        parts.append(np.asarray(values, dtype="<f8").tobytes())
    return b"".join(parts)


def frame(payload: bytes) -> bytes:
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", _crc(length, payload)) + payload


def decode_chunk(payload: bytes | memoryview) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A payload's series: name -> (steps, values). A payload that passed its checksum but does not parse is
    a bug or a newer format: RecordError."""
    try:
        (count,) = _COUNT.unpack_from(payload, 0)
        at = _COUNT.size
        chunk: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for _ in range(count):
            (name_len,) = _NAME_LEN.unpack_from(payload, at)
            at += _NAME_LEN.size
            name = bytes(payload[at : at + name_len]).decode("utf-8")
            at += name_len
            (n,) = _N.unpack_from(payload, at)
            at += _N.size
            steps = np.frombuffer(payload, dtype="<i8", count=n, offset=at)
            at += 8 * n
            values = np.frombuffer(payload, dtype="<f8", count=n, offset=at)
            at += 8 * n
            chunk[name] = (steps, values)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"series log: a frame that does not parse ({exc}).") from None
    return chunk


def scan_frames(data: bytes | memoryview, start: int) -> tuple[list[memoryview], int]:
    """The payloads of the complete, intact frames in data from `start` (views into it, not copies), and the offset
    just past the last of them.

    Stops at the first frame that is cut short or fails its checksum: a torn tail, left unread."""
    frames: list[memoryview] = []
    at, end = start, len(data)
    view = memoryview(data)
    unpack, crc32 = FRAME_HEADER.unpack_from, zlib.crc32
    while end - at >= 8:
        length, crc = unpack(view, at)
        body = at + 8
        if length > MAX_FRAME or body + length > end:
            break
        payload = view[body : body + length]
        if crc32(payload, crc32(view[at : at + 4])) != crc:
            break
        frames.append(payload)
        at = body + length
    return frames, at


def check_header(data: bytes, source: str) -> None:
    """RecordError unless data starts with a series log's header of a version this tuitrain reads."""
    magic, version = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise RecordError(f"{source}: not a tuitrain series log.")
    if version > LOG_FORMAT_VERSION:
        raise RecordError(
            f"{source}: written by a newer tuitrain (series log version {version}; this version reads up to "
            f"{LOG_FORMAT_VERSION}). Upgrade tuitrain to read it."
        )


@dataclass
class Series:
    """One metric's points, in the order logged."""

    steps: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.steps)


def merge_chunks(
    chunks: Iterable[dict[str, tuple[np.ndarray, np.ndarray]]], into: dict[str, Series], *, rewind: bool = True
) -> int:
    """Add decoded chunks to the series in `into` (one concatenation per series, not one per chunk), applying
    rewinds (see the module's docstring) unless `rewind` is False (points from elsewhere, e.g. TensorBoard's event
    files, whose steps may repeat); the number of rewinds met."""
    pieces: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    last_step: dict[str, int] = {}
    rewinds = 0
    for chunk in chunks:
        for name, (steps, values) in chunk.items():
            if not len(steps):
                continue
            listed = pieces.get(name)
            if listed is None:
                listed = pieces[name] = ([], [])
                old = into.get(name)
                if old is not None and len(old):
                    listed[0].append(old.steps)
                    listed[1].append(old.values)
                    last_step[name] = int(old.steps[-1])
            first = int(steps[0])
            if rewind and name in last_step and first <= last_step[name]:  # a rewind: the points from `first` on go
                rewinds += 1
                kept_steps = np.concatenate(listed[0]) if listed[0] else np.empty(0, dtype=np.int64)
                kept_values = np.concatenate(listed[1]) if listed[1] else np.empty(0, dtype=np.float64)
                cut = int(np.searchsorted(kept_steps, first, side="left"))
                listed[0][:] = [kept_steps[:cut]]
                listed[1][:] = [kept_values[:cut]]
            listed[0].append(steps)
            listed[1].append(values)
            last_step[name] = int(steps[-1])
    for name, (step_parts, value_parts) in pieces.items():
        into[name] = Series(np.concatenate(step_parts), np.concatenate(value_parts))
    return rewinds


class SeriesReader:
    """Tails one series log by byte offset: each read_new() reads only the bytes appended since the last.

    A torn tail stays unread until a later look finds it completed (or cut off by a reopening writer).
    A file that shrank below the offset or was replaced (another inode) is read again from its start. A frame that
    rewinds a series (the module's docstring) drops that series' later points read before."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        """Bytes of the file read so far: just past the last complete frame."""
        self.inode: int | None = None
        self.series: dict[str, Series] = {}
        """Every point read so far, by metric name."""
        self.bytes_read = 0
        """Bytes read from the file over this reader's life (tests and benchmarks count them)."""
        self.rewinds = 0
        """Rewinds met over this reader's life (a follower replays the run's points when it grows)."""

    def read_new(self) -> bool:
        """Read what was appended; True if the series changed (new points, a rewind, or a restart from the start).

        Raises RecordError for a file that is not a series log or is of a newer version; OSError passes."""
        with open(self.path, "rb") as fh:
            st = os.fstat(fh.fileno())
            restarted = self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset)
            if restarted or self.inode is None:
                self.offset, self.series, self.inode = 0, {}, st.st_ino
            if self.offset == 0:
                head = fh.read(FILE_HEADER.size)
                self.bytes_read += len(head)
                if len(head) < FILE_HEADER.size:
                    return restarted
                check_header(head, str(self.path))
                self.offset = FILE_HEADER.size
            fh.seek(self.offset)
            data = fh.read()
        self.bytes_read += len(data)
        frames, used = scan_frames(data, 0)
        self.offset += used
        self.rewinds += merge_chunks((decode_chunk(p) for p in frames), self.series)
        return restarted or bool(frames)


def read_series(path: Path) -> dict[str, Series]:
    """Every series in a log (a torn tail ignored)."""
    reader = SeriesReader(path)
    reader.read_new()
    return reader.series


class SeriesWriter:
    """Appends chunks of steps to a series log; never rewrites what is written.

    Opening an existing log keeps its intact frames and cuts off a torn tail (from a killed writer), so
    that what is appended next is readable."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.bytes_written = 0
        """Bytes appended by this writer (the append-cost test and benchmarks count them)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size < FILE_HEADER.size:
                os.ftruncate(fd, 0)
                header = FILE_HEADER.pack(MAGIC, LOG_FORMAT_VERSION)
                os.write(fd, header)
                self.bytes_written += len(header)
            else:
                with open(self.path, "rb") as fh:
                    data = fh.read()
                check_header(data, str(self.path))
                _, end = scan_frames(data, FILE_HEADER.size)
                if end < size:
                    os.ftruncate(fd, end)
            self.size = os.lseek(fd, 0, os.SEEK_END)
            """Bytes in the file: the end of its last complete frame."""
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def append(self, columns: Mapping[str, tuple[Sequence[int], Sequence[float]]]) -> int:
        """Append one frame holding these series' new points; the bytes written."""
        return self.append_frame(frame(encode_chunk(columns)))

    def append_frame(self, data: bytes) -> int:
        """Append one frame already made (`frame(encode_chunk(...))`, e.g. by a worker that sent it); the bytes
        written."""
        if self._fd is None:
            raise ValueError(f"{self.path}: series log closed")
        view = memoryview(data)
        try:
            while view:  # os.write may write less than asked (a signal, a nearly full disk)
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            # a full disk: cut the partial frame off, so that the frames appended once there is room are read
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
                os.lseek(self._fd, self.size, os.SEEK_SET)
            raise
        self.size += len(data)
        self.bytes_written += len(data)
        return len(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
