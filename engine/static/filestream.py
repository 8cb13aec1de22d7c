"""Large files, streamed in chunks under flow control."""
import os

from engine.http.stream import Stream

CHUNK = 256 << 10           # bytes per read of a streamed file


# ---- streaming large files --------------------------------------------------
class FileStream(Stream):
    """A response head, then ``length`` bytes of ``fd`` from ``offset``.

    Read with ``os.pread`` in CHUNK pieces and written to the transport
    (uvloop 0.23 has no ``loop.sendfile``; see docs/static.md). Reading stops
    while the client's buffer is full and resumes when it drains, so memory
    stays at about one chunk plus the transport's high-water mark.
    """

    def __init__(self, fd):
        self.fd = fd            # owned: closed exactly once, by close()
        self.offset = 0
        self.remaining = 0
        self.head = b""
        self.keep = True
        self.conn = None
        self.paused = False

    def answer(self, head, offset, length, keep):
        """Make this the answer: ``head``, then the file's bytes [offset, offset+length)."""
        self.head = head
        self.offset = offset
        self.remaining = length
        self.keep = keep
        return self

    def start(self, conn):
        self.started = True
        self.conn = conn
        conn.transport.write(self.head)
        self.head = b""
        self._pump()

    # A client that stops reading is the connection's business: it aborts
    # after WriteTimeoutSeconds paused, which ends this stream through close().
    def pause_output(self):
        self.paused = True

    def resume_output(self):
        self.paused = False
        if self.conn is not None:
            self._pump()

    def _pump(self):
        transport = self.conn.transport
        while self.remaining and not self.paused:
            if self.fd < 0 or transport.is_closing():
                return
            try:
                data = os.pread(self.fd, min(CHUNK, self.remaining), self.offset)
            except OSError:
                data = b""
            if not data:
                # The file shrank (or failed) under us: the promised length
                # cannot be sent, so the client must see a cut connection.
                self._abort()
                return
            self.offset += len(data)
            self.remaining -= len(data)
            transport.write(data)       # may call pause_output before returning
        if not self.remaining and self.fd >= 0:
            self.close()
            self.conn.stream_finished(self, self.keep)

    def _abort(self):
        self.close()
        if self.conn is not None:
            self.conn.transport.abort()

    def close(self):
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
