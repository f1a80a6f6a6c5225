"""The synthetic web over real loopback HTTP: good images and every bad kind."""

from __future__ import annotations

import io
import urllib.error
import urllib.request

import pytest
from PIL import Image

from pipelines.synthetic.scenes import make_scene
from pipelines.synthetic.server import SyntheticWeb


@pytest.fixture(scope="module")
def web():
    with SyntheticWeb(seed=3, slow_seconds=1.5) as served:
        yield served


def _get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


def test_good_image_is_the_scene(web):
    status, headers, body = _get(web.image_url(4))
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    scene = make_scene(3, 4)
    assert Image.open(io.BytesIO(body)).size == (scene.width, scene.height)
    assert web.base_url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(("kind", "code"), [("missing", 404), ("redirect_loop", 302)])
def test_http_errors(web, kind, code):
    with pytest.raises(urllib.error.HTTPError) as error:
        _get(web.bad_url(kind, 1))
    assert error.value.code == code


def test_bad_bodies_and_headers(web):
    assert _get(web.bad_url("html", 1))[1]["Content-Type"] == "text/html"
    with pytest.raises(OSError):
        Image.open(io.BytesIO(_get(web.bad_url("corrupt", 1))[2])).load()
    assert Image.open(io.BytesIO(_get(web.bad_url("oversized", 1))[2])).size == (5000, 5000)
    assert _get(web.bad_url("noai", 1))[1]["X-Robots-Tag"] == "noai"
    with pytest.raises(TimeoutError):
        _get(web.bad_url("slow", 1), timeout=0.3)


def test_flaky_fails_once_then_serves(web):
    with pytest.raises(urllib.error.HTTPError) as error:
        _get(web.bad_url("flaky", 9))
    assert error.value.code == 503
    assert _get(web.bad_url("flaky", 9))[0] == 200


def test_unknown_bad_kind_is_rejected(web):
    with pytest.raises(ValueError, match="unknown bad kind"):
        web.bad_url("teapot", 1)
