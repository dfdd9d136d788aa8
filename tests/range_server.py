"""A loopback HTTP server that answers byte ranges, as an object store does: it stands in for
an HTTPS host and for Cloud Storage's XML API (``/<bucket>/<object>``, percent-encoded names
decoded) in the tests that read remote files."""

import contextlib
import email.utils
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                   "ALL_PROXY")


class RangeRequests(http.server.SimpleHTTPRequestHandler):
  """Serves files from ``directory`` and answers single byte ranges (206), with the
  ``Last-Modified`` and ``ETag`` an object store sends; records every GET's path, Range header
  and bytes sent."""

  log: list  # set per server

  def do_GET(self):  # noqa: N802 (http.server's naming)
    path = Path(self.translate_path(self.path))
    if not path.is_file():
      self.send_error(404)
      return
    data, size = path.read_bytes(), path.stat().st_size
    header = self.headers.get("Range")
    if header is None:
      start, end, status = 0, size - 1, 200
    else:
      first, _, last = header.removeprefix("bytes=").split(",")[0].partition("-")
      start, end, status = int(first), min(int(last or size - 1), size - 1), 206
    body = data[start:end + 1]
    self.log.append((self.path, header, len(body)))
    self.send_response(status)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Accept-Ranges", "bytes")
    self.send_header("Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True))
    self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
    if status == 206:
      self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):
    pass


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[tuple[str, list]]:
  """``(base URL, request log)`` of a server of ``directory`` on a free loopback port. Callers
  clear the proxy variables first (``PROXY_VARIABLES``): loopback must not go through one."""
  handler = type("Handler", (RangeRequests,), {"log": []})
  server = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.log
  finally:
    server.shutdown()
    thread.join()
