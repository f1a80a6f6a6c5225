"""A real HTTP server on 127.0.0.1 serving the synthetic web, good images and the bad kinds.

The bad kinds are the failures a LAION-scale download meets: 404s, stalls past the timeout, HTML
where an image should be, corrupt bytes, oversized images, redirect loops, `X-Robots-Tag: noai`,
and flaky 503s that succeed when asked again (what a repair pass exists for).
"""

from __future__ import annotations

import functools
import io
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from pipelines.synthetic.scenes import make_scene, render_jpeg

BAD_KINDS = ("missing", "slow", "html", "corrupt", "oversized", "redirect_loop", "noai", "flaky")
RETRYABLE_KINDS = ("slow", "flaky")
"""Kinds whose failure is transient (timeouts, 5xx): a later attempt can succeed."""
_PATH = re.compile(r"^/(?:images|bad/(?P<kind>[a-z_]+))/(?P<index>\d+)\.jpg$")


@functools.lru_cache(maxsize=8192)
def _scene_jpeg(seed: int, index: int) -> bytes:
    return render_jpeg(make_scene(seed, index))


@functools.lru_cache(maxsize=1)
def _oversized_jpeg(side: int = 5000) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 90, 90)).save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default 5 drops connections under a parallel download


class SyntheticWeb:
    """Serves the synthetic web in a background thread; use as a context manager.

    Args:
        seed: picks the scenes; the same seed serves the same bytes at the same URLs.
        slow_seconds: how long a `slow` URL stalls before answering.
        flaky_failures: how many times each `flaky` URL answers 503 before it answers 200.
        port: 0 picks a free port; a fixed port keeps URLs stable across restarts.
        latency_seconds: added before every answer, like a distant host (0: loopback speed).
    """

    def __init__(
        self,
        seed: int = 0,
        slow_seconds: float = 4.0,
        flaky_failures: int = 1,
        port: int = 0,
        latency_seconds: float = 0.0,
    ):
        self.seed, self.slow_seconds, self.flaky_failures = seed, slow_seconds, flaky_failures
        self.port, self.latency_seconds = port, latency_seconds
        self._flaky_seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the synthetic web is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def image_url(self, index: int) -> str:
        return f"{self.base_url}/images/{index}.jpg"

    def bad_url(self, kind: str, index: int) -> str:
        if kind not in BAD_KINDS:
            raise ValueError(f"unknown bad kind {kind!r}; expected one of {BAD_KINDS}")
        return f"{self.base_url}/bad/{kind}/{index}.jpg"

    def start(self) -> SyntheticWeb:
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (the stdlib's name)
                web._serve(self)

            def log_message(self, *args):  # keep test and demo output readable
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SyntheticWeb:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests += 1
        if self.latency_seconds:
            time.sleep(self.latency_seconds)
        match = _PATH.match(request.path)
        if not match:
            return self._reply(request, 404, b"not found", "text/plain")
        kind, index = match["kind"], int(match["index"])
        image = functools.partial(_scene_jpeg, self.seed, index)
        if kind is None:
            return self._reply(request, 200, image(), "image/jpeg")
        if kind == "missing":
            return self._reply(request, 404, b"not found", "text/plain")
        if kind == "slow":
            time.sleep(self.slow_seconds)
            return self._reply(request, 200, image(), "image/jpeg")
        if kind == "html":
            return self._reply(request, 200, b"<html><body>gone</body></html>", "text/html")
        if kind == "corrupt":
            return self._reply(
                request, 200, b"\xff\xd8\xff\xe0" + b"\x00garbage" * 64, "image/jpeg"
            )
        if kind == "oversized":
            return self._reply(request, 200, _oversized_jpeg(), "image/jpeg")
        if kind == "redirect_loop":
            return self._reply(request, 302, b"", "text/plain", {"Location": request.path})
        if kind == "noai":
            return self._reply(request, 200, image(), "image/jpeg", {"X-Robots-Tag": "noai"})
        if kind == "flaky":
            with self._lock:
                seen = self._flaky_seen.get(request.path, 0)
                self._flaky_seen[request.path] = seen + 1
            if seen < self.flaky_failures:
                return self._reply(request, 503, b"try again", "text/plain")
            return self._reply(request, 200, image(), "image/jpeg")
        return self._reply(request, 404, b"not found", "text/plain")

    @staticmethod
    def _reply(request, status: int, body: bytes, content_type: str, headers: dict | None = None):
        try:
            request.send_response(status)
            request.send_header("Content-Type", content_type)
            request.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                request.send_header(name, value)
            request.end_headers()
            request.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout); nothing to tell it


def main(argv: list[str] | None = None) -> None:
    """Serves a synthetic web in the foreground until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description="Serve the synthetic image web on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=18765, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--seed", type=int, default=0, help="picks the scenes")
    parser.add_argument("--slow-seconds", type=float, default=4.0, help="stall of slow URLs")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    args = parser.parse_args(argv)
    web = SyntheticWeb(seed=args.seed, slow_seconds=args.slow_seconds, port=args.port,
                       latency_seconds=args.latency)  # fmt: skip
    with web:
        print(f"serving {web.image_url(0)} ... (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
