"""Planted media for the fault tests: clips written with PyAV (exact presentation times), corrupted
or truncated copies, and a loopback HTTP server that serves files with byte ranges."""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest


def write_clip(path: Path, n: int = 60, size: tuple[int, int] = (96, 96), codec: str = "libx264", fps: int = 25,
               times_ms: list[int] | None = None, noise: bool = True, seed: int = 0, audio: bool = False) -> Path:
    """A clip of ``n`` frames, each showing its number; ``times_ms``: each frame's presentation time
    (variable frame rate), else ``1000 / fps`` apart. Noise makes the frames big (so that a corrupted
    stretch of the file is a stretch of frames); ``audio``: with an AAC track (a tone)."""
    av = pytest.importorskip("av")
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    c = av.open(str(path), "w")
    a = None
    if audio:
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuvj420p" if codec == "mjpeg" else "yuv420p"
    if times_ms is not None:
        s.time_base = s.codec_context.time_base = Fraction(1, 1000)
    for i in range(n):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8) if noise else np.full((h, w, 3), 90, np.uint8)
        cv2.putText(img, str(i), (4, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        f = av.VideoFrame.from_ndarray(img, format="bgr24")
        if times_ms is not None:
            f.pts, f.time_base = times_ms[i], Fraction(1, 1000)
        for p in s.encode(f):
            c.mux(p)
    if a is not None:  # a 440 Hz tone as long as the video
        t = np.arange(int(44100 * n / fps)) / 44100
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, i:i + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = 44100, i
            for p in a.encode(chunk):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def corrupt_middle(src: Path, dst: Path, nbytes: int, seed: int = 1) -> Path:
    """``src`` with ``nbytes`` random bytes written over its middle (the container's index is intact)."""
    data = bytearray(src.read_bytes())
    mid = len(data) // 2 - nbytes // 2
    data[mid:mid + nbytes] = np.random.default_rng(seed).bytes(nbytes)
    dst.write_bytes(bytes(data))
    return dst


def decodable_frames(path: Path) -> int:
    """How many frames PyAV can decode from ``path``, skipping the packets it cannot (the reference)."""
    import av

    n = 0
    with av.open(str(path)) as c:
        for packet in c.demux(video=0):
            try:
                n += len(packet.decode())
            except av.FFmpegError:
                pass
    return n


def opencv_frames(path: Path) -> int:
    """How many frames OpenCV's ``read()`` gives before it first returns False."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


class FileServer:
    """Serves the files of a folder over loopback HTTP, with byte ranges (as file servers do)."""

    def __init__(self, root: Path) -> None:
        root = Path(root)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                try:
                    data = (root / self.path.lstrip("/").split("?")[0]).read_bytes()
                except OSError:
                    self.send_error(404)
                    return
                m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                start, end = 0, len(data) - 1
                if m:
                    start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else end
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                try:
                    self.wfile.write(data[start:end + 1])
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()



def backbone_variant(path: Path, nan_above: float | None = None, batch1: bool = False) -> Path:
    """The shipped backbone, changed: ``nan_above``: its heatmaps are NaN for a crop whose mean
    (normalised) input is above this (a bright crop); ``batch1``: exported with a fixed batch of 1."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from stableface.weights import resolve

    m = onnx.load(str(resolve(None).backbone))
    g = m.graph
    if nan_above is not None:
        out = g.output[0].name
        for node in g.node:
            node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
        g.initializer.extend([helper.make_tensor("nan_above", TensorProto.FLOAT, [], [nan_above]),
                              helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")]),
                              helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
        g.node.extend([helper.make_node("ReduceMean", [g.input[0].name], ["crop_mean"], axes=[1, 2, 3], keepdims=1),
                       helper.make_node("Greater", ["crop_mean", "nan_above"], ["bright"]),
                       helper.make_node("Where", ["bright", "nan", "zero"], ["poison"]),
                       helper.make_node("Add", [f"{out}_raw", "poison"], [out])])
    if batch1:
        for v in (g.input[0], g.output[0]):
            v.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(m, str(path))
    return path


def astronauts():
    """Two people (BGR uint8 tiles, head and shoulders): A is scikit-image's astronaut photo (public
    domain) at 0.8x, 192 x 184; B is the same photo mirrored and hue-shifted, at 1.0x (240 x 230)."""
    import cv2

    data = pytest.importorskip("skimage.data")
    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    a = cv2.resize(photo[20:260, 110:340], None, fx=0.8, fy=0.8)
    hsv = cv2.cvtColor(np.ascontiguousarray(photo[20:260, 110:340][:, ::-1]), cv2.COLOR_BGR2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + 25) % 180
    return a, cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def two_faces_stage(n: int = 90, width: int = 480, height: int = 360, enter: int = 20, leave: int = 50):
    """A planted two-person clip: (frames, face_x) with ``face_x[i] = (xa, xb)`` the frame x of each face's
    centre (outside the frame while the face leaves it), ``None`` when nothing of that person is in view.

    A is scikit-image's astronaut photo (public domain), head and shoulders at 0.8x, on the left;
    B is the same photo mirrored, hue-shifted and at 1.0x (the detector scores B higher), on the
    right. B walks in from the right edge until frame ``enter``; A walks out to the left from
    frame ``leave`` at 12 px per frame. Flat grey background with sensor noise (sigma 3).
    """
    a, b = astronauts()
    face_a, face_b = 0.8 * (225 - 110), (340 - 225)  # the face's centre in each tile (photo x 225)
    frames, xs = [], []
    for i in range(n):
        rng = np.random.default_rng(i)
        img = np.full((height, width, 3), 70.0)
        xa = 10 - 12 * max(0, i - leave)
        xb = 250 + 12 * max(0, enter - i)
        pos = []
        for tile, x, fx in ((a, xa, face_a), (b, xb, face_b)):
            x0, x1 = max(x, 0), min(x + tile.shape[1], width)
            if x1 > x0:
                img[height - tile.shape[0]:, x0:x1] = tile[:, x0 - x:x1 - x]
            pos.append(x + fx if x1 > x0 else None)
        frames.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))
        xs.append(tuple(pos))
    return frames, xs
