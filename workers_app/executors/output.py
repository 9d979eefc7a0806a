"""Bounded output: a run keeps only the last RUN_OUTPUT_LIMIT_BYTES of each stream."""

import threading


class TailBuffer:
    """Keeps the last ``limit`` bytes written to it, in bounded memory.

    Written to by a reader thread while the executor's loop may read it, hence
    the lock. Trimming is amortised: the buffer may grow to twice the limit
    before the head is cut, so a stream of small writes costs O(1) each.
    """

    def __init__(self, limit):
        self.limit = limit
        self.total = 0
        self._buffer = bytearray()
        self._lock = threading.Lock()

    def write(self, data):
        if not data:
            return
        with self._lock:
            self.total += len(data)
            if len(data) >= self.limit:
                self._buffer = bytearray(data[-self.limit :])
                return
            self._buffer += data
            if len(self._buffer) > 2 * self.limit:
                del self._buffer[: len(self._buffer) - self.limit]

    @property
    def truncated(self):
        return self.total > self.limit

    def getvalue(self):
        with self._lock:
            return bytes(self._buffer[-self.limit :])

    def text(self):
        return tail_text(self.getvalue(), self.limit, cut=self.truncated)


def tail_text(data, limit, cut=False):
    """Decode the tail of a byte stream into at most ``limit`` bytes of UTF-8 text.

    A tail cut in the middle of a multi-byte character starts with continuation
    bytes: they are dropped rather than shown as replacement characters.
    Invalid bytes elsewhere become U+FFFD, which is longer in UTF-8, so the
    result is cut again to keep the bound. NULs go: PostgreSQL text refuses them.
    """
    data = data[-limit:]
    if cut or len(data) == limit:
        skip = 0
        while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
            skip += 1
        data = data[skip:]
    text = data.decode("utf-8", "replace").replace("\x00", "")
    encoded = text.encode("utf-8")
    if len(encoded) > limit:
        text = encoded[-limit:].decode("utf-8", "ignore")
    return text
