import time

import cv2
import numpy as np
import pytest

from stableface.video import LiveSource, SourceError, expand, open_source, to_bgr8

from .media import FileServer, corrupt_middle, decodable_frames, opencv_frames, write_clip
from .mjpeg_server import MJPEGServer


def test_to_bgr8_handles_grey_16bit_rgba_float():
    assert to_bgr8(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    deep = to_bgr8(np.full((2, 2), 65535, np.uint16))
    assert deep.dtype == np.uint8 and deep.max() == 255
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 2] = 200
    assert to_bgr8(rgba)[0, 0].tolist() == [0, 0, 200]
    assert to_bgr8(np.full((2, 2, 3), 0.5, np.float32)).max() == 128


def test_video_round_trip_frames_and_timestamps(tmp_path):
    p = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (32, 24))
    for i in range(5):
        w.write(np.full((24, 32, 3), i * 40, np.uint8))
    w.release()
    with open_source(str(p)) as src:
        frames = list(src)
        assert (src.info.width, src.info.height, src.info.fps, src.info.frame_count) == (32, 24, 20.0, 5)
    assert [f.index for f in frames] == list(range(5))
    assert [f.timestamp_ms for f in frames] == [0.0, 50.0, 100.0, 150.0, 200.0]
    assert [int(round(f.image.mean() / 40)) for f in frames] == list(range(5))


def test_sequence_folder_and_batch_expansion(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), np.full((8, 8), i * 50, np.uint8))
    with open_source(str(tmp_path), sequence=True) as src:
        assert [int(f.image[0, 0, 0]) for f in src] == [0, 50, 100]
    assert expand([str(tmp_path)]) == [str(tmp_path / f"f{i:03d}.png") for i in range(3)]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images or videos"):
        expand([str(empty)])


def test_bad_sources_raise_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    fake = tmp_path / "fake.mp4"
    fake.write_text("hello")
    with pytest.raises(SourceError, match="not a readable video"):
        open_source(str(fake))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(SourceError, match="not a readable image"):
        open_source(str(bad))


def test_live_stream_drops_stale_frames_and_ends_when_the_server_stops():
    with MJPEGServer(fps=60, max_frames=2000) as server:
        src = LiveSource(server.url, server.url, stall_timeout_s=2.0)
        got = []
        t0 = time.monotonic()
        for frame in src:
            got.append(frame)
            time.sleep(0.05)  # a consumer slower than the 60 fps stream
            if len(got) == 10:
                server.stop()
            if time.monotonic() - t0 > 20:
                break
        src.close()
    assert len(got) >= 10
    assert src.dropped > 0  # stale frames were skipped, not queued
    stamps = [f.timestamp_ms for f in got]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    index = [f.index for f in got]  # the stream's own numbers: a dropped frame leaves its number out
    assert index[0] == 0 and all(b > a for a, b in zip(index, index[1:]))
    assert 0 < index[-1] + 1 - len(got) <= src.dropped
    assert src.stop_reason == "the stream ended"


def test_refused_url_is_a_source_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(SourceError, match="cannot open"):
        open_source(f"http://127.0.0.1:{port}/x.mjpg")


def test_reconnect_resumes_a_dropped_stream():
    # each connection serves 15 frames then drops; the server accepts 3 connections
    with MJPEGServer(fps=30, max_frames=15, connections=3) as server:
        plain = LiveSource(server.url, server.url, stall_timeout_s=2.0)
        n_plain = sum(1 for _ in plain)
        plain.close()
        again = LiveSource(server.url, server.url, stall_timeout_s=2.0, reconnect=3, reconnect_delay_s=0.2)
        n_again = sum(1 for _ in again)
        again.close()
    assert 1 <= n_plain <= 15
    assert again.reconnected == 1  # the third connection is the last one served
    assert n_again > 15


@pytest.fixture(params=["pyav", "opencv"])
def decoder(request, monkeypatch):
    """Both decoders: PyAV (when installed) and OpenCV (without it)."""
    if request.param == "pyav":
        pytest.importorskip("av")
    else:
        import stableface.video as V

        monkeypatch.setattr(V, "_av", lambda: None)
    return request.param


def test_variable_frame_rate_frames_are_timed_by_the_container(tmp_path, decoder):
    # 12 frames 40 ms apart, then 120 ms apart: frame 12 is at 480 ms (index x average fps says 578 ms)
    times = [40 * i for i in range(13)] + [480 + 120 * i for i in range(1, 8)]
    clip = write_clip(tmp_path / "vfr.mp4", n=len(times), times_ms=times, noise=False)
    with open_source(str(clip)) as src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(len(times)))
    assert [f.timestamp_ms for f in frames] == [float(t) for t in times]
    assert not src.unreadable and not src.incomplete


def test_a_corrupt_stretch_is_skipped_and_its_frames_listed(tmp_path, decoder):
    clip = write_clip(tmp_path / "clip.mp4", n=300, size=(128, 128))
    bad = corrupt_middle(clip, tmp_path / "bad.mp4", clip.stat().st_size // 4)
    today = opencv_frames(bad)  # read() gives up at the first bad packet
    assert today < 200
    with open_source(str(bad)) as src:
        frames = list(src)
        assert src.info.frame_count == 300
    index = [f.index for f in frames]
    assert sorted(index + list(src.unreadable)) == list(range(300))  # each number once: read, or listed
    assert [f.timestamp_ms for f in frames] == [40.0 * i for i in index]  # the numbers are the container's
    assert src.incomplete
    if decoder == "pyav":  # on past the bad packets: every frame the decoder can give
        assert len(frames) == decodable_frames(bad) > today + 50
        assert index[-1] == 299
    else:  # OpenCV cannot go on, but says what is missing
        assert len(frames) == today and list(src.unreadable) == list(range(today, 300))


def test_a_truncated_file_lists_the_frames_it_announced_but_lost(tmp_path):
    av = pytest.importorskip("av")
    clip = write_clip(tmp_path / "clip.mp4", n=200, size=(96, 96))
    fast = tmp_path / "fast.mp4"  # the index first (as web video is), so a cut file still opens
    with av.open(str(clip)) as i, av.open(str(fast), "w", options={"movflags": "+faststart"}) as o:
        out = o.add_stream_from_template(i.streams.video[0])
        for packet in i.demux(video=0):
            if packet.dts is not None:
                packet.stream = out
                o.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size * 2 // 3])
    with open_source(str(cut)) as src:
        n = sum(1 for _ in src)
    assert 50 < n < 200 and list(src.unreadable) == list(range(n, 200))


def test_a_url_to_a_file_is_read_like_a_file(tmp_path, decoder):
    write_clip(tmp_path / "clip.mp4", n=120, noise=False)
    with FileServer(tmp_path) as server:
        with open_source(server.url("clip.mp4")) as src:
            assert not src.info.live and src.info.frame_count == 120
            frames = [(f.index, f.timestamp_ms) for f in src]
    assert frames == [(i, 40.0 * i) for i in range(120)]  # every frame, none dropped, true numbers


def test_a_name_that_is_not_utf8_opens_with_either_decoder(tmp_path, decoder):
    import os

    odd = os.fsdecode(os.fsencode(tmp_path) + b"/v\xff.mp4")  # OpenCV crashed on such a name
    os.rename(write_clip(tmp_path / "v.mp4", n=10, noise=False), odd)
    with open_source(odd) as src:
        assert [f.index for f in src] == list(range(10))
    assert os.listdir(tmp_path) == [os.path.basename(odd)]


def test_a_url_from_a_server_without_range_requests_is_read_in_full(tmp_path):
    """Python's own http.server answers no Range requests: a file whose index sits at its end
    (OpenCV's mp4v writer puts it there) is copied to a temporary file and read like a file."""
    import functools
    import glob
    import http.server
    import threading

    path = tmp_path / "tail.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for i in range(30):
        w.write(np.full((48, 64, 3), 5 * i, np.uint8))
    w.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tail.mp4"
        before = set(glob.glob("/tmp/stableface-*.mp4"))
        with open_source(url) as src:
            frames = list(src)
            assert src.info.name == url and src.info.stem == "tail"
        assert [f.index for f in frames] == list(range(30))
        assert set(glob.glob("/tmp/stableface-*.mp4")) <= before  # the copy is gone
    finally:
        server.shutdown()
