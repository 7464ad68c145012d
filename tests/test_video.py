import time

import cv2
import numpy as np
import pytest

from stableface.video import LiveSource, SourceError, expand, open_source, to_bgr8

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
