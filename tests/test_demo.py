import json

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("matplotlib")

from stableface.demo import jitter, make_clip, motion  # noqa: E402


def test_jitter_of_a_perfect_tracker_is_zero():
    ms = motion(10, 512)
    still = np.random.default_rng(0).uniform(100, 400, size=(68, 2))
    from stableface.crop import apply

    tracks = np.stack([apply(m, still) for m in ms])
    j = jitter(tracks, ms)
    assert j["jitter_px"] < 1e-9 and j["frame_to_frame_px"] < 1e-9


def test_clip_moves_like_a_handheld_camera():
    frames, ms = make_clip(12, noise=5.0)
    assert len(frames) == 12 and frames[0].shape == (512, 512, 3)
    shifts = np.linalg.norm(np.diff(ms[:, :, 2], axis=0), axis=-1)
    assert 0 < shifts.max() < 10


@pytest.mark.slow
def test_demo_writes_video_json_plot_and_reports_jitter(tmp_path):
    from click.testing import CliRunner

    from stableface.cli import main

    r = CliRunner().invoke(main, ["demo", "--out-dir", str(tmp_path), "--frames", "20", "-q"])
    assert r.exit_code == 0, r.output
    for name in ("demo.mp4", "demo.json", "demo_trajectories.png", "demo_jitter.json"):
        assert (tmp_path / name).stat().st_size > 0
    doc = json.loads((tmp_path / "demo.json").read_text())
    assert len(doc["frames"]) == 20 and all(len(f["faces"]) == 1 for f in doc["frames"])
    stats = json.loads((tmp_path / "demo_jitter.json").read_text())
    assert set(stats) == {"none", "one-euro", "convlstm"}
    assert "convlstm" in r.output and "than raw" in r.output
