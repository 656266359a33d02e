"""Length-prefixed frames over Unix stream sockets, with file descriptors (SCM_RIGHTS).

Used between the gRPC front, the zygote and each worker. Sends go through
sendmsg and receives through recvmsg only, because the worker's seccomp
allowlist has exactly those two (no sendto/recvfrom). Frames never carry
Python objects: protobuf bytes or JSON only (never pickle).
"""

from __future__ import annotations

import array
import contextlib
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

# payload length, kind, request id, number of fds attached to this frame
HEADER = struct.Struct("!IBQH")
MAX_FDS_PER_FRAME = 250
MAX_FRAME_BYTES = 256 * 1024 * 1024
_CHUNK = 1 << 20
# Below glibc's mmap threshold (128 KiB): served from the heap.
_SMALL_READ = 64 * 1024
_ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * 4)

# Frame kinds.
HELLO = 1  # zygote -> front: pool ready, JSON layer report
RUN = 2  # front -> worker: StepRequest (+ document fds)
RESULT = 3  # worker -> front: StepResult bytes
STATUS = 4  # front -> zygote: status request
STATUS_REPLY = 5  # zygote -> front: JSON status
READY = 6  # worker -> zygote: hardened, JSON layer report
SHUTDOWN = 7  # front -> zygote
FATAL = 8  # zygote -> front: refusing to run (strict mode), JSON reason
WORKER = 9  # zygote -> front: a warm worker (req_id = pid, fd = its socket)
DISPATCH = 10  # front -> zygote: worker req_id got a step; payload !d seconds
FATE = 11  # front -> zygote: why did worker (payload !Q pid) not answer?
FATE_REPLY = 12  # zygote -> front: JSON {code, message, details}
CALL = 13  # worker -> front: InlineCall bytes (req_id = call_id), during its step
CALL_REPLY = 14  # front -> worker: InlineReply bytes
PAUSE = 15  # front -> zygote: worker req_id waits on a call; payload !d wait seconds allowed
RESUME = 16  # front -> zygote: worker req_id computes again

# The largest inline call a worker may send (its InlineCall bytes).
MAX_CALL_BYTES = 16 * 1024 * 1024


class WireError(Exception):
    """The peer broke the framing protocol."""


class FrameTooLarge(WireError):
    """A frame announced more bytes than its kind may carry."""


@dataclass
class Frame:
    kind: int
    req_id: int
    payload: bytes
    fds: list[int] = field(default_factory=list)


def send_frame(sock: socket.socket, kind: int, req_id: int, payload: bytes, fds: Sequence[int] = ()) -> None:
    if len(fds) > MAX_FDS_PER_FRAME:
        raise WireError(f"too many file descriptors for one frame ({len(fds)})")
    data = memoryview(HEADER.pack(len(payload), kind, req_id, len(fds)) + payload)
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sent = sock.sendmsg([data[:_CHUNK]], ancillary)
    while sent < len(data):
        sent += sock.sendmsg([data[sent : sent + _CHUNK]])


class FrameReader:
    """Reassembles frames from a stream; fds queue up in arrival order."""

    def __init__(
        self,
        sock: socket.socket,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        kind_limits: dict[int, int] | None = None,
    ):
        self.sock = sock
        self.max_frame_bytes = max_frame_bytes
        self.kind_limits = kind_limits or {}
        self._buffer = bytearray()
        self._fds: list[int] = []
        self._held: list[Frame] = []
        self.eof = False

    def feed(self) -> list[Frame]:
        """One recvmsg; returns the frames it completed. Sets `eof` at end of stream."""
        data, ancdata, flags, _ = self.sock.recvmsg(self._want(), _ANCILLARY_SPACE)
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
                self._fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            self.close_fds()
            raise WireError("file descriptors were truncated")
        if not data:
            self.eof = True
            return []
        self._buffer += data
        return self._parse()

    def _want(self) -> int:
        """Bytes to ask recvmsg for: the rest of the frame under way, at least
        _SMALL_READ and at most _CHUNK. A small frame then never makes the
        allocator map and unmap a 1 MiB buffer (three syscalls and fresh
        pages in every process on the step's path)."""
        if len(self._buffer) < HEADER.size:
            return _SMALL_READ
        length: int = HEADER.unpack_from(self._buffer)[0]
        return min(_CHUNK, max(_SMALL_READ, HEADER.size + length - len(self._buffer)))

    def read_frame(self) -> Frame | None:
        """Blocks until one whole frame arrived; None at end of stream. For a
        reader that takes one frame at a time (the worker), never mixed with feed()."""
        while True:
            self._held.extend(self._parse())
            if self._held:
                return self._held.pop(0)
            if self.eof:
                return None
            frames = self.feed()
            if frames:
                self._held.extend(frames[1:])
                return frames[0]

    def _parse(self) -> list[Frame]:
        frames = []
        while len(self._buffer) >= HEADER.size:
            length, kind, req_id, nfds = HEADER.unpack_from(self._buffer)
            if length > self.kind_limits.get(kind, self.max_frame_bytes):
                raise FrameTooLarge(f"frame of {length} bytes is over the limit")
            if len(self._buffer) < HEADER.size + length:
                break
            if nfds > len(self._fds):
                raise WireError("frame announced more fds than arrived")
            payload = bytes(self._buffer[HEADER.size : HEADER.size + length])
            del self._buffer[: HEADER.size + length]
            fds, self._fds = self._fds[:nfds], self._fds[nfds:]
            frames.append(Frame(kind, req_id, payload, fds))
        return frames

    def close_fds(self) -> None:
        import os

        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
