"""Frames on a real Unix socket pair: reassembly across reads of any size, fds
kept with their frame, limits enforced before a payload is buffered."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from rlm_rs.sandbox.pool import _wire


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def test_small_frames_arrive_whole_and_in_order() -> None:
    left, right = _pair()
    with left, right:
        for index in range(50):
            _wire.send_frame(left, _wire.RESULT, index, f"payload {index}".encode())
        left.shutdown(socket.SHUT_WR)
        reader = _wire.FrameReader(right)
        frames = []
        while (frame := reader.read_frame()) is not None:
            frames.append(frame)
    assert [(f.kind, f.req_id, f.payload) for f in frames] == [
        (_wire.RESULT, index, f"payload {index}".encode()) for index in range(50)
    ]


@pytest.mark.parametrize("size", [_wire._SMALL_READ - 1, _wire._SMALL_READ + 17, 3 * _wire._CHUNK + 5])
def test_large_frame_with_fds_is_reassembled(size: int) -> None:
    left, right = _pair()
    payload = os.urandom(size)
    read_fd, write_fd = os.pipe()
    sender = threading.Thread(target=_wire.send_frame, args=(left, _wire.RUN, 7, payload, [read_fd]))
    with left, right:
        sender.start()
        frame = _wire.FrameReader(right).read_frame()
        sender.join()
    try:
        assert frame is not None and frame.payload == payload and frame.req_id == 7
        assert len(frame.fds) == 1
        os.write(write_fd, b"x")
        assert os.read(frame.fds[0], 1) == b"x"  # the very pipe we sent
    finally:
        for fd in (read_fd, write_fd, *(frame.fds if frame else [])):
            os.close(fd)


def test_reads_ask_for_the_rest_of_the_frame_within_bounds() -> None:
    left, right = _pair()
    with left, right:
        reader = _wire.FrameReader(right)
        assert reader._want() == _wire._SMALL_READ  # nothing buffered: a small read
        left.sendall(_wire.HEADER.pack(10 * _wire._CHUNK, _wire.RUN, 1, 0))
        assert reader.feed() == []
        assert reader._want() == _wire._CHUNK  # a big frame under way: full chunks
        sender = threading.Thread(target=left.sendall, args=(b"\0" * (10 * _wire._CHUNK - 100),))
        sender.start()
        while len(reader._buffer) < _wire.HEADER.size + 10 * _wire._CHUNK - 100:
            reader.feed()
        sender.join()
        assert reader._want() == _wire._SMALL_READ  # 100 bytes left: a small read


def test_oversized_frame_is_refused_from_its_header() -> None:
    left, right = _pair()
    with left, right:
        reader = _wire.FrameReader(right, kind_limits={_wire.CALL: 1024})
        left.sendall(_wire.HEADER.pack(1025, _wire.CALL, 1, 0))
        with pytest.raises(_wire.FrameTooLarge):
            reader.feed()


def test_worker_peek_for_a_waiting_step_consumes_nothing() -> None:
    """The worker skips its warm-up when the step is already there; the peek
    leaves the frame, and the document fd attached to it, for the real read."""
    from rlm_rs.sandbox.pool._worker import step_waiting

    left, right = _pair()
    read_fd, write_fd = os.pipe()
    frame = None
    with left, right:
        assert not step_waiting(right)  # nothing sent yet: warm up
        _wire.send_frame(left, _wire.RUN, 3, b"request bytes", [read_fd])
        assert step_waiting(right) and step_waiting(right)
        frame = _wire.FrameReader(right).read_frame()
    try:
        assert frame is not None and frame.payload == b"request bytes" and len(frame.fds) == 1
        os.write(write_fd, b"y")
        assert os.read(frame.fds[0], 1) == b"y"
    finally:
        for fd in (read_fd, write_fd, *(frame.fds if frame else [])):
            os.close(fd)


def test_worker_peek_sees_a_front_that_hung_up() -> None:
    from rlm_rs.sandbox.pool._worker import step_waiting

    left, right = _pair()
    with right:
        left.close()
        assert step_waiting(right)
