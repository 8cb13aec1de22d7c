"""Answers written over time: a proxied exchange, a large file, a tunnel.

Most answers are one ``bytes`` object built synchronously. A ``Stream`` is an
answer that is written piece by piece by its own code; the connection keeps
answers in request order, so a stream starts only when every answer before it
has been written, and answers after it wait until it calls ``finish``.

Life cycle, as ``HttpConnection`` drives it:

- ``feed(data)`` / ``feed_eof()``: the request body, as it arrives (only for
  streams created at the end of the request head, i.e. proxied requests).
  ``feed_eof`` comes when the request message is complete.
- ``start(conn)``: the stream is at the head of the queue and may write to
  ``conn.transport``. It must eventually call ``conn.stream_finished(self,
  keep)`` (``keep=False`` closes the connection afterwards) or abort the
  transport.
- ``pause_output()`` / ``resume_output()``: the client's socket buffer is
  full / drained again (flow control: stop producing, e.g. stop reading the
  upstream or the file).
- ``check_deadline(now)``: called by the once-a-second sweep while the stream
  is at the head; returns the next deadline (monotonic seconds), after acting
  on an expired one.
- ``tunnel(data)``: raw bytes after an HTTP Upgrade (WebSocket), once the
  stream has accepted the upgrade with ``conn.start_tunnel(self)``.
- ``close()``: the client connection is gone; release everything (upstream
  connection, file descriptor). Called at most once, possibly before start.
"""

FAR = float("inf")


class Stream:
    """Base class: a stream with no request body and no deadlines."""
    started = False
    deadline = FAR      # streams in registry.streams are checked once it passes

    def feed(self, data):
        pass

    def feed_eof(self):
        pass

    def start(self, conn):
        raise NotImplementedError

    def pause_output(self):
        pass

    def resume_output(self):
        pass

    def check_deadline(self, now):
        return FAR

    def tunnel(self, data):
        pass

    def close(self):
        pass
