"""TensorBoard event files, read as they are: their scalars, tailed by byte offset. No TensorFlow, no torch.

An event file (`events.out.tfevents.*`) is a TFRecord file: records framed as
`length (u64 LE) | masked CRC32C of the length bytes (u32 LE) | data[length] | masked CRC32C of data (u32 LE)`,
each data a serialized `tensorboard.Event` protobuf. Both checksums are checked: a record whose length
checksum fails is garbage (nothing after it can be framed), one whose data checksum fails is damaged; the
reader stops at either, and at a record cut short (a torn tail, which a live writer completes later).

The protobuf is decoded here by hand, for the few fields a scalar needs (see `_EVENT_FIELDS` below): the
`Event`/`Summary` messages have kept these field numbers since TensorFlow 1.0, and a decoder of ~100 lines
spares the reader the `tensorboard` package (grpcio, werkzeug...) and its pinning of protobuf versions.
Scalars come in two forms: `simple_value` (torch's SummaryWriter.add_scalar, TF1, Lightning's
TensorBoardLogger) and a 0-d numeric `tensor` (TF2's tf.summary.scalar, add_scalar(new_style=True)).

CRC32C comes from the `google-crc32c` package (C, maintained by Google): the optional extra
`tuitrain[tensorboard]`. Without it, opening an event file is a one-line error saying what to install.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuitrain.core.errors import TuitrainError

EVENT_FILE_MARK = "tfevents"
"""Event files are named events.out.tfevents.<time>.<host>[.<pid>.<n>][suffix]."""
_HEADER = struct.Struct("<QI")
"""A record's length and the masked CRC32C of its 8 length bytes."""
_FOOTER = struct.Struct("<I")
"""The masked CRC32C of the record's data."""
MAX_RECORD = 1 << 30
"""A record longer than this is a damaged length, not a record."""

_MASK_DELTA = 0xA282EAD8


def is_event_file(path: Path) -> bool:
    return EVENT_FILE_MARK in path.name and path.name.startswith("events.out.") and not path.name.startswith(".")


def _crc32c() -> Callable[[bytes], int]:
    try:
        import google_crc32c
    except ImportError:
        raise TuitrainError(
            "reading TensorBoard event files needs the google-crc32c package: pip install 'tuitrain[tensorboard]'"
        ) from None
    value: Callable[[bytes], int] = google_crc32c.value
    return value


def masked_crc32c(data: bytes, crc32c: Callable[[bytes], int] | None = None) -> int:
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant (so that a CRC of CRCs is not 0)."""
    crc = (crc32c or _crc32c())(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class EventFileError(TuitrainError):
    """An event file whose records are damaged in the middle (not a torn tail)."""


# --- protobuf wire format ---------------------------------------------------------------------------------
# Field numbers (tensorboard/compat/proto: event.proto, summary.proto, tensor.proto, tensor_shape.proto).
_EVENT_WALL_TIME, _EVENT_STEP, _EVENT_SUMMARY = 1, 2, 5
_SUMMARY_VALUE = 1
_VALUE_TAG, _VALUE_SIMPLE, _VALUE_TENSOR, _VALUE_METADATA = 1, 2, 8, 9
_METADATA_PLUGIN, _METADATA_DATA_CLASS = 1, 4
_PLUGIN_NAME = 1
_TENSOR_DTYPE, _TENSOR_SHAPE, _TENSOR_CONTENT = 1, 2, 4
_SHAPE_DIM, _DIM_SIZE = 2, 1
# repeated numeric fields of a TensorProto, by dtype: (field number, struct format of one packed element or None
# for varints); DataType enum values from types.proto
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_INT64, _DT_HALF = 1, 2, 3, 9, 19
_TENSOR_VALUES: dict[int, tuple[int, str | None]] = {
    _DT_FLOAT: (5, "<f"),
    _DT_DOUBLE: (6, "<d"),
    _DT_INT32: (7, None),
    _DT_INT64: (10, None),
    _DT_HALF: (13, None),
}
_CONTENT_FORMAT = {_DT_FLOAT: "<f", _DT_DOUBLE: "<d", _DT_INT32: "<i", _DT_INT64: "<q", _DT_HALF: "<e"}
_DATA_CLASS_SCALAR = 1
SCALARS_PLUGIN = "scalars"
HPARAMS_PLUGIN = "hparams"
# plugin_data.content of the hparams plugin: HParamsPluginData.session_start_info (3) .hparams (1): a map of
# string to google.protobuf.Value (number 2, string 3, bool 4)
_HPARAMS_SESSION_START, _SESSION_HPARAMS = 3, 1
_VALUE_NUMBER, _VALUE_STRING, _VALUE_BOOL = 2, 3, 4

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


class _Malformed(Exception):
    pass


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if at >= len(buf) or shift > 63:
            raise _Malformed
        b = buf[at]
        at += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, at
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, object]]:
    """A message's fields in order: (number, wire type, value): an int for varint/fixed, bytes for length-delimited."""
    out: list[tuple[int, int, object]] = []
    at, end = 0, len(buf)
    while at < end:
        key, at = _varint(buf, at)
        number, wire = key >> 3, key & 7
        value: object
        if wire == 0:
            value, at = _varint(buf, at)
        elif wire == 1:
            value, at = buf[at : at + 8], at + 8
        elif wire == 2:
            length, at = _varint(buf, at)
            value, at = buf[at : at + length], at + length
        elif wire == 5:
            value, at = buf[at : at + 4], at + 4
        else:  # groups (3, 4) are not in these messages
            raise _Malformed
        if at > end:
            raise _Malformed
        out.append((number, wire, value))
    return out


def _first(fields: list[tuple[int, int, object]], number: int) -> object | None:
    return next((v for n, _, v in fields if n == number), None)


def _plugin(metadata: bytes) -> tuple[str | None, int, bytes]:
    """A value's plugin name, data class and plugin content."""
    fields = _fields(metadata)
    plugin = _first(fields, _METADATA_PLUGIN)
    plugin_fields = _fields(plugin) if isinstance(plugin, bytes) else []
    name, content = _first(plugin_fields, _PLUGIN_NAME), _first(plugin_fields, 2)
    data_class = _first(fields, _METADATA_DATA_CLASS)
    return (
        name.decode("utf-8", "replace") if isinstance(name, bytes) else None,
        data_class if isinstance(data_class, int) else 0,
        content if isinstance(content, bytes) else b"",
    )


def _hparams(content: bytes) -> dict[str, float | str | bool]:
    """The hyperparameters of an hparams plugin's session_start_info (written by add_hparams, Lightning's
    TensorBoardLogger.log_hyperparams); empty for its other records."""
    start = _first(_fields(content), _HPARAMS_SESSION_START)
    if not isinstance(start, bytes):
        return {}
    found: dict[str, float | str | bool] = {}
    for number, _, entry in _fields(start):
        if number != _SESSION_HPARAMS or not isinstance(entry, bytes):
            continue
        entry_fields = _fields(entry)
        key, value = _first(entry_fields, 1), _first(entry_fields, 2)
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            continue
        for kind, _, v in _fields(value):
            if kind == _VALUE_NUMBER and isinstance(v, bytes):
                found[key.decode("utf-8")] = _DOUBLE.unpack(v)[0]
            elif kind == _VALUE_STRING and isinstance(v, bytes):
                found[key.decode("utf-8")] = v.decode("utf-8", "replace")
            elif kind == _VALUE_BOOL and isinstance(v, int):
                found[key.decode("utf-8")] = bool(v)
    return found


def _tensor_scalar(tensor: bytes) -> float | None:
    """The value of a tensor holding one number; None for any other tensor (a histogram, text, an image...)."""
    fields = _fields(tensor)
    dtype = _first(fields, _TENSOR_DTYPE)
    if not isinstance(dtype, int) or dtype not in _TENSOR_VALUES:
        return None
    shape = _first(fields, _TENSOR_SHAPE)
    if isinstance(shape, bytes):
        for number, _, dim in _fields(shape):
            if number == _SHAPE_DIM and isinstance(dim, bytes) and _first(_fields(dim), _DIM_SIZE) not in (None, 1):
                return None
    content = _first(fields, _TENSOR_CONTENT)
    if isinstance(content, bytes) and content:
        raw = _CONTENT_FORMAT[dtype]
        return float(struct.unpack(raw, content)[0]) if len(content) == struct.calcsize(raw) else None
    number, fmt = _TENSOR_VALUES[dtype]
    values: list[float] = []
    for n, wire, v in fields:
        if n != number:
            continue
        if wire == 2 and isinstance(v, bytes):  # packed
            if fmt is None:
                at = 0
                while at < len(v):
                    x, at = _varint(v, at)
                    values.append(float(x - (1 << 64) if x >= 1 << 63 else x))  # int64: two's complement
            else:
                values.extend(x for (x,) in struct.iter_unpack(fmt, v))
        elif isinstance(v, int):
            values.append(float(v - (1 << 64) if v >= 1 << 63 else v))
        elif isinstance(v, bytes) and fmt is not None and len(v) == struct.calcsize(fmt):
            values.append(struct.unpack(fmt, v)[0])
    if len(values) != 1:
        return None
    if dtype == _DT_HALF:  # half_val holds the 16 bits of a float16 in an int32
        return float(struct.unpack("<e", struct.pack("<H", int(values[0]) & 0xFFFF))[0])
    return values[0]


@dataclass
class ScalarPoints:
    """One tag's points, in the order read."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)


@dataclass
class EventFileReader:
    """Tails one event file by byte offset: each read_new() decodes only the records appended since the last.

    A record cut short stays unread until a later read finds it complete. A file that shrank below the offset
    or was replaced (another inode) is read again from its start (`restarted`)."""

    path: Path
    offset: int = 0
    """Bytes read so far: just past the last complete record."""
    inode: int | None = None
    scalar_tags: set[str] = field(default_factory=set)
    """Tags known (from their metadata) to be scalars: TF2 writes the metadata with a tag's first value only."""
    other_tags: set[str] = field(default_factory=set)
    """Tags of other plugins (histograms, text, hparams...), whose tensors are not scalars even with one element."""
    hparams: dict[str, float | str | bool] = field(default_factory=dict)
    """Hyperparameters the writer logged with the hparams plugin."""
    bytes_read: int = 0
    first_wall_time: float | None = None
    last_wall_time: float | None = None

    def read_new(self) -> tuple[dict[str, ScalarPoints], bool]:
        """The scalar points appended since the last call, by tag, and whether the file was read from its start
        again (replaced or truncated: the caller drops what it had). OSError passes (a file gone)."""
        crc32c = _crc32c()
        with open(self.path, "rb") as fh:
            st = os.fstat(fh.fileno())
            restarted = self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset)
            if restarted or self.inode is None:
                self.offset, self.inode = 0, st.st_ino
                self.scalar_tags.clear()
                self.other_tags.clear()
                self.hparams.clear()
                self.first_wall_time = self.last_wall_time = None
            if st.st_size == self.offset:
                return {}, restarted
            fh.seek(self.offset)
            data = fh.read()
        self.bytes_read += len(data)
        points: dict[str, ScalarPoints] = {}
        at, end = 0, len(data)
        while end - at >= _HEADER.size:
            length, length_crc = _HEADER.unpack_from(data, at)
            if masked_crc32c(data[at : at + 8], crc32c) != length_crc or length > MAX_RECORD:
                # the 12 header bytes are all there (a reader sees a prefix of what was written): damage, not a tear
                raise EventFileError(f"{self.path}: damaged record length at byte {self.offset + at}.")
            body = at + _HEADER.size
            stop = body + length + _FOOTER.size
            if stop > end:
                break  # a torn tail: read it once the writer has completed it
            record = data[body : body + length]
            (data_crc,) = _FOOTER.unpack_from(data, body + length)
            if masked_crc32c(record, crc32c) != data_crc:
                raise EventFileError(f"{self.path}: damaged record (data checksum) at byte {self.offset + at}.")
            try:
                self._decode(record, points)
            except (_Malformed, struct.error, UnicodeDecodeError):
                raise EventFileError(f"{self.path}: a record at byte {self.offset + at} is not an Event.") from None
            at = stop
        self.offset += at
        return points, restarted

    def _decode(self, record: bytes, points: dict[str, ScalarPoints]) -> None:
        event = _fields(record)
        summary = _first(event, _EVENT_SUMMARY)
        wall = _first(event, _EVENT_WALL_TIME)
        wall_time = _DOUBLE.unpack(wall)[0] if isinstance(wall, bytes) and len(wall) == 8 else 0.0
        if wall_time:
            if self.first_wall_time is None:
                self.first_wall_time = wall_time
            self.last_wall_time = wall_time
        if not isinstance(summary, bytes):
            return  # file_version, graph, session log...
        step = _first(event, _EVENT_STEP)
        step = step if isinstance(step, int) else 0
        if step >= 1 << 63:
            step -= 1 << 64
        for number, _, value in _fields(summary):
            if number != _SUMMARY_VALUE or not isinstance(value, bytes):
                continue
            fields = _fields(value)
            tag_bytes = _first(fields, _VALUE_TAG)
            if not isinstance(tag_bytes, bytes):
                continue
            tag = tag_bytes.decode("utf-8")
            metadata = _first(fields, _VALUE_METADATA)
            if isinstance(metadata, bytes):
                plugin, data_class, content = _plugin(metadata)
                if plugin == SCALARS_PLUGIN or data_class == _DATA_CLASS_SCALAR:
                    self.scalar_tags.add(tag)
                elif plugin == HPARAMS_PLUGIN:
                    self.other_tags.add(tag)
                    self.hparams.update(_hparams(content))
                elif plugin:
                    self.other_tags.add(tag)
            simple = _first(fields, _VALUE_SIMPLE)
            scalar: float | None = None
            if isinstance(simple, bytes) and len(simple) == 4:
                scalar = _FLOAT.unpack(simple)[0]
            elif tag not in self.other_tags:
                tensor = _first(fields, _VALUE_TENSOR)
                if isinstance(tensor, bytes):
                    scalar = _tensor_scalar(tensor)
            if scalar is None:
                continue
            series = points.get(tag)
            if series is None:
                series = points[tag] = ScalarPoints()
            series.steps.append(step)
            series.values.append(scalar)
            series.wall_times.append(wall_time)
