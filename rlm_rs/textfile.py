"""Read-only access to a canonical text file by character offsets.

A `TextFile` mmaps the canonical UTF-8 text and uses its offsets.json
checkpoints (docs/api.md#parser-contract-and-search) to turn character offsets into byte offsets, so a slice
of a 100 MB document decodes only the bytes between two checkpoints. It must
never hold the whole text as one str. Standard library only: the sandbox
worker uses it on file descriptors it was handed.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
from typing import Any

from rlm_rs.canonical import CHECKPOINT_INTERVAL, build_offsets

# Linux maps up to this many bytes around a faulting page (fault_around_bytes).
_FAULT_AROUND_BYTES = 64 * 1024


class TextFile:
    """Character-addressed view of an mmapped canonical UTF-8 text."""

    def __init__(self, text_fd: int, offsets: dict[str, Any] | None) -> None:
        size = os.fstat(text_fd).st_size
        self._map: mmap.mmap | None = mmap.mmap(text_fd, size, access=mmap.ACCESS_READ) if size else None
        if self._map is not None:
            # Reads are random and small: no read-ahead or fault-around that
            # would map pages this process never asked for.
            self._map.madvise(mmap.MADV_RANDOM)
        self.byte_length = size
        if offsets is None:
            offsets = _scan_offsets(self._map, size)
        self.char_length: int = int(offsets["char_length"])
        self._interval: int = int(offsets.get("checkpoint_interval") or CHECKPOINT_INTERVAL)
        points = offsets["checkpoints"]
        self._chars: list[int] = [int(p["char"]) for p in points]
        self._bytes: list[int] = [int(p["byte"]) for p in points]
        if int(offsets.get("byte_length", size)) != size:
            raise ValueError("offsets.json does not describe this text (byte_length differs)")

    @classmethod
    def open_path(cls, text_path: str, offsets_path: str | None = None) -> TextFile:
        fd = os.open(text_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            offsets = None
            if offsets_path:
                with open(offsets_path, encoding="utf-8") as handle:
                    offsets = json.load(handle)
            return cls(fd, offsets)
        finally:
            os.close(fd)  # the mapping keeps its own reference

    @classmethod
    def from_fds(cls, text_fd: int, offsets_fd: int | None = None) -> TextFile:
        offsets = json.loads(read_fd(offsets_fd)) if offsets_fd is not None else None
        return cls(text_fd, offsets)

    def __len__(self) -> int:
        return self.char_length

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    # --- character <-> byte -------------------------------------------------

    def _checkpoint_at_or_before(self, char_pos: int) -> int:
        return max(bisect.bisect_right(self._chars, char_pos) - 1, 0)

    def _byte_of_checkpoint_after(self, char_pos: int) -> int:
        index = bisect.bisect_left(self._chars, char_pos)
        return self._bytes[index] if index < len(self._bytes) else self.byte_length

    def byte_offset(self, char_pos: int) -> int:
        """Byte offset of character `char_pos` (0 <= char_pos <= char_length)."""
        if char_pos >= self.char_length:
            return self.byte_length
        index = self._checkpoint_at_or_before(char_pos)
        base_char, base_byte = self._chars[index], self._bytes[index]
        if char_pos == base_char:
            return base_byte
        end_byte = self._byte_of_checkpoint_after(char_pos + 1)
        chunk = self._raw(base_byte, end_byte).decode("utf-8")
        return base_byte + len(chunk[: char_pos - base_char].encode("utf-8"))

    def char_offset(self, byte_pos: int) -> int:
        """Character offset of the character starting at byte `byte_pos`."""
        index = max(bisect.bisect_right(self._bytes, byte_pos) - 1, 0)
        base_char, base_byte = self._chars[index], self._bytes[index]
        return base_char + len(self._raw(base_byte, byte_pos).decode("utf-8"))

    def _raw(self, start_byte: int, end_byte: int) -> bytes:
        if self._map is None or end_byte <= start_byte:
            return b""
        data = self._map[start_byte:end_byte]
        # Drop the pages from this process's resident set once copied: the
        # page cache keeps them, but a step reading a 100 MB document stays
        # within a few MB of an empty step. The window is widened to the
        # kernel's fault-around granule, which maps neighbouring pages too.
        window_start = start_byte - start_byte % _FAULT_AROUND_BYTES
        window_end = min(end_byte + _FAULT_AROUND_BYTES - 1, self.byte_length)
        window_end -= window_end % _FAULT_AROUND_BYTES if window_end < self.byte_length else 0
        self._map.madvise(mmap.MADV_DONTNEED, window_start, window_end - window_start)
        return data

    # --- reading ---------------------------------------------------------------

    def slice(self, start: int, end: int) -> str:
        """text[start:end] by character offsets, clamped to the text."""
        start = min(max(start, 0), self.char_length)
        end = min(max(end, start), self.char_length)
        if start == end:
            return ""
        index = self._checkpoint_at_or_before(start)
        base_char, base_byte = self._chars[index], self._bytes[index]
        end_byte = self._byte_of_checkpoint_after(end)
        chunk = self._raw(base_byte, end_byte).decode("utf-8")
        return chunk[start - base_char : end - base_char]

    def find_bytes(self, needle: bytes, start_byte: int, end_byte: int) -> int:
        """Byte position of `needle` in [start_byte, end_byte), or -1."""
        if self._map is None:
            return -1
        return self._map.find(needle, start_byte, end_byte)


def read_fd(fd: int) -> bytes:
    """Everything readable from `fd` from offset 0 (pread: the fd offset is untouched)."""
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _scan_offsets(mapping: mmap.mmap | None, size: int) -> dict[str, Any]:
    """Checkpoints for a text that came without offsets.json. This decodes the
    whole text once (memory ~ its size): producers should always ship offsets."""
    text = mapping[:size].decode("utf-8") if mapping is not None else ""
    return build_offsets(text, doc_id="")
