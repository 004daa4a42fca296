"""Length-delimited framing of the plaintext record stream.

The plaintext of a transfer is ``varint(len) || RecordBatch`` repeated
(protobuf's own delimited format). The reader is bounded: a batch longer than
``max_batch_bytes`` or a varint longer than 5 bytes is refused before any
allocation, because the plaintext comes from another district.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from protos.rt.v1 import records_pb2
from rt_client.errors import InvalidInput

MAX_BATCH_BYTES = 4 * 1024 * 1024


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def delimit(batch: records_pb2.RecordBatch) -> bytes:
    body = batch.SerializeToString()
    return encode_varint(len(body)) + body


def delimited_size(batch: records_pb2.RecordBatch) -> int:
    size = batch.ByteSize()
    return len(encode_varint(size)) + size


class BatchReader:
    """Turns plaintext pieces (any sizes) back into ``RecordBatch`` messages.

    Feed it with :meth:`feed`, which yields every batch completed so far; call
    :meth:`close` at the end, which refuses a stream that stops mid-batch.
    """

    def __init__(self, max_batch_bytes: int = MAX_BATCH_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_batch_bytes

    def feed(self, data: bytes) -> Iterator[records_pb2.RecordBatch]:
        self._buf += data
        pos = 0
        buf = self._buf
        while True:
            length, header = self._read_varint(buf, pos)
            if length is None or pos + header + length > len(buf):
                break
            start = pos + header
            batch = records_pb2.RecordBatch()
            try:
                batch.ParseFromString(bytes(buf[start : start + length]))
            except Exception as exc:  # protobuf raises DecodeError, and others on bad UTF-8
                raise InvalidInput("a record batch could not be parsed") from exc
            pos = start + length
            yield batch
        del self._buf[:pos]

    def close(self) -> None:
        if self._buf:
            raise InvalidInput("the record stream ends in the middle of a batch")

    def _read_varint(self, buf: bytearray, pos: int) -> tuple[int | None, int]:
        value = 0
        for i in range(5):
            if pos + i >= len(buf):
                return None, 0
            byte = buf[pos + i]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if value > self._max:
                    raise InvalidInput("a record batch is larger than allowed")
                return value, i + 1
        raise InvalidInput("a record batch length is malformed")


def read_batches(
    pieces: Iterable[bytes], max_batch_bytes: int = MAX_BATCH_BYTES
) -> Iterator[records_pb2.RecordBatch]:
    reader = BatchReader(max_batch_bytes)
    for piece in pieces:
        yield from reader.feed(piece)
    reader.close()
