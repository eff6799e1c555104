"""Run gcp-storage-emulator with one thread per connection.

The emulator serves connections one at a time on a plain HTTPServer. HTTP clients that race
a new connection against waiting for a pooled one (hyper, under reqwest, under OpenDAL)
leave connected sockets idle, and the emulator then waits on such a socket while every other
request queues behind it: with redundancy writing to two GCS backends at once, whole test
runs stalled. Here connections are accepted and read on their own threads, and requests are
still handled one at a time (the emulator's in-memory storage is not thread-safe).
Arguments are the emulator's own, e.g. `start --host 127.0.0.1 --port 9023 --in-memory`.
"""
import sys
import threading
from http import server as http_server

http_server.HTTPServer = http_server.ThreadingHTTPServer

from gcp_storage_emulator import server as emulator  # noqa: E402  (after the patch)
from gcp_storage_emulator.__main__ import main  # noqa: E402

_one_at_a_time = threading.Lock()
_handle = emulator.Router.handle


def _serialised(self, *args, **kwargs):
    with _one_at_a_time:
        return _handle(self, *args, **kwargs)


emulator.Router.handle = _serialised
sys.exit(main(sys.argv[1:]))
