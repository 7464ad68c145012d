"""The real-motion generator: motion decomposition, the warp, the ground truth, the codec round trip."""

import numpy as np
import pytest

from stableface import ibug, realmotion as R


def _face(rng, centre=(160.0, 150.0), iod=60.0):
    """A plausible 68-point shape (the mean iBUG layout is not needed: any spread-out shape will do)."""
    pts = rng.uniform(-1, 1, size=(68, 2)) * [iod * 0.9, iod * 1.1]
    pts[ibug.LEFT_EYE_OUTER] = [-iod / 2, -iod / 4]
    pts[ibug.RIGHT_EYE_OUTER] = [iod / 2, -iod / 4]
    return pts + centre


def test_fit_similarity_and_params_round_trip():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(30, 2))
    m = R.from_params(np.array([0.1, 0.2, 3.0, -4.0]))
    assert np.abs(R.fit_similarity(src, R.apply(m, src)) - m).max() < 1e-9
    assert np.allclose(R.to_params(m), [0.1, 0.2, 3.0, -4.0])


def test_motion_clip_separates_pose_from_shape():
    """A track that only translates and rolls has a pose that does and no residual; a mouth that
    opens is residual, not pose."""
    rng = np.random.default_rng(1)
    base = _face(rng)
    t = np.arange(40)
    shift = np.stack([3 * np.sin(t / 5), 2 * np.cos(t / 7)], axis=1)
    track = np.stack([R.apply(R.from_params(np.array([0.0, 0.01 * np.sin(i / 6), 0, 0])), base - base.mean(0)) + base.mean(0)
                      + shift[i] for i in t])
    clip = R.MotionClip.from_track("rigid", track, sigma=0.5)
    assert np.abs(clip.residual).max() < 2e-3  # in IOD units
    assert np.ptp(clip.pose[:, 2]) > 0.05 and np.ptp(clip.pose[:, 1]) > 0.01
    mouth = track.copy()
    mouth[:, 57, 1] += 6.0 * (t % 10 > 4)  # the lower lip drops every other half second
    clip2 = R.MotionClip.from_track("mouth", mouth, sigma=0.5)
    assert np.ptp(clip2.residual[:, 57, 1]) > 0.05
    assert np.abs(clip2.pose - clip.pose).max() < 0.01  # one point barely moves the pose


def test_render_still_script_reproduces_the_still_and_its_points():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, size=(160, 160, 3), dtype=np.uint8)
    pts = _face(rng, centre=(80.0, 80.0), iod=40.0)
    script = R.MotionScript(np.zeros((3, 4)), np.zeros((3, 68, 2)), "still")
    spec = R.RenderSpec(width=400, height=320, noise=(0.0, 0.0), exposure=0.0, light_drift=0.0)
    frames, gt = R.render(img, pts, script, spec, np.random.default_rng(0))
    up = pts * spec.upscale + [(400 - 320) / 2, 0.0]
    assert np.abs(gt - up).max() < 1e-4
    # the canvas holds the upscaled still at its place (up to the cubic resampling at the seams)
    assert np.abs(frames[0].astype(float) - frames[2].astype(float)).max() == 0


def test_render_translation_moves_pixels_and_ground_truth_together():
    """A script that shifts the head by 0.1 IOD to the right moves the image content and the ground truth
    by the same number of pixels (phase correlation of the frames)."""
    import cv2

    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 255, size=(160, 160, 3), dtype=np.uint8), (7, 7), 0)
    pts = _face(rng, centre=(80.0, 80.0), iod=40.0)
    pose = np.zeros((2, 4))
    pose[1, 2] = 0.1  # IOD units, along the eye line (level here)
    script = R.MotionScript(pose, np.zeros((2, 68, 2)), "shift")
    spec = R.RenderSpec(width=400, height=320, noise=(0.0, 0.0), exposure=0.0, light_drift=0.0)
    frames, gt = R.render(img, pts, script, spec, np.random.default_rng(0))
    d = gt[1] - gt[0]
    iod = ibug.interocular(pts * spec.upscale)
    assert np.allclose(d, [0.1 * iod, 0.0], atol=1e-3)
    g0, g1 = (cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32) for f in frames)
    (sx, sy), _ = cv2.phaseCorrelate(g0[60:260, 100:300], g1[60:260, 100:300])
    assert abs(sx - d[0, 0]) < 0.3 and abs(sy) < 0.3


def test_make_script_is_seeded_and_varies():
    rng = np.random.default_rng(4)
    track = np.stack([_face(rng) + [np.sin(i / 4) * 5, 0] for i in range(50)])
    clips = [R.MotionClip.from_track("a", track), R.MotionClip.from_track("b", track[::-1].copy())]
    a = R.make_script(clips, 30, np.random.default_rng(7))
    b = R.make_script(clips, 30, np.random.default_rng(7))
    c = R.make_script(clips, 30, np.random.default_rng(8))
    assert np.array_equal(a.pose, b.pose) and a.label == b.label
    assert a.pose.shape == (30, 4) and a.residual.shape == (30, 68, 2)
    assert not np.array_equal(a.pose, c.pose)
    assert np.abs(a.pose.mean(axis=0)).max() < 1e-9  # relative to its own mean pose


def test_write_clip_round_trip_keeps_every_frame_and_the_ground_truth(tmp_path):
    pytest.importorskip("av")
    rng = np.random.default_rng(5)
    frames = [np.full((96, 128, 3), 40 + 10 * i, np.uint8) for i in range(12)]
    gt = rng.uniform(0, 90, size=(12, 68, 2)).astype(np.float32)
    path = R.write_clip(tmp_path / "c.mp4", frames, gt, fps=25.0, bitrate=0.5e6)
    back = R.read_clip(path)
    assert len(back) == 12 and back[0].shape == (96, 128, 3)
    assert abs(float(back[5].mean()) - 90.0) < 3.0  # H.264 keeps a flat frame's level
    assert np.array_equal(np.load(tmp_path / "c.npy"), gt)
    assert not list(tmp_path.glob("*.partial*"))
