"""The face motion by image flow (``stabilizer.FaceMotion`` given the crop's pixels): planted motions."""

import cv2
import numpy as np
import pytest

from stableface.crop import CropBox, invert, warp
from stableface.stabilizer import FaceMotion, MotionConfig, apply_affine, fit_similarity


def _texture(seed: int = 0, size: int = 480) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(128, 60, size=(size, size)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 2.5 - 190, 0, 255).astype(np.uint8)


def _similarity(dx: float, dy: float, deg: float, scale: float, centre=(240.0, 240.0)) -> np.ndarray:
    m = cv2.getRotationMatrix2D(centre, deg, scale)
    m[:, 2] += (dx, dy)
    return m


POINTS = np.random.default_rng(1).uniform(190, 290, size=(68, 2))
BOX = CropBox(240.0, 240.0, 160.0)


def _frame(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(image, m, image.shape[::-1], flags=cv2.INTER_LINEAR)


def test_flow_measures_the_similarity_between_two_crops():
    img = _texture()
    m = _similarity(2.3, -1.7, 1.0, 1.01)
    moved_box = CropBox(243.0, 238.5, 162.0)  # the crop followed the face (not exactly)
    fm = FaceMotion(MotionConfig())
    fm.update(POINTS, 0.0, BOX.side, warp(img, BOX, 128), BOX)
    got = fm._flow_step(warp(_frame(img, m), moved_box, 128), moved_box)
    assert got is not None
    err = np.linalg.norm(apply_affine(got, POINTS) - apply_affine(m, POINTS), axis=-1)
    assert err.mean() < 0.15, err.mean()


def _run(images, points, boxes, flow: bool) -> np.ndarray:
    """The face's motion per frame, given colour crops as the pipeline gives them."""
    fm = FaceMotion(MotionConfig(min_cutoff=16.0, flow=flow))
    out = []
    for t, (im, p, b) in enumerate(zip(images, points, boxes)):
        out.append(fm.update(p, 40.0 * t, b.side, cv2.cvtColor(warp(im, b, 128), cv2.COLOR_GRAY2BGR), b))
    return np.array(out)


def test_flow_holds_a_still_face_whose_landmarks_jitter():
    """A still image with landmarks that jitter together (the raw backbone's common-mode noise):
    the flow's motion stays near the identity, the landmark fit passes the noise on."""
    img, rng = _texture(), np.random.default_rng(2)
    n = 60
    pts = [POINTS + rng.normal(0, 1.0, size=2) + rng.normal(0, 0.5, size=POINTS.shape) for _ in range(n)]
    boxes = [CropBox(240.0 + rng.normal(0, 1), 240.0 + rng.normal(0, 1), 160.0) for _ in range(n)]
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    for flow, bound in ((True, 0.3), (False, None)):
        ms = _run([img] * n, pts, boxes, flow)
        # where each motion maps the first frame's landmarks, against the true (no) motion of the face
        shift = np.array([apply_affine(m, pts[0]).mean(0) - apply_affine(ident, pts[0]).mean(0) for m in ms[10:]])
        step = np.linalg.norm(np.diff(shift, axis=0), axis=-1).mean()
        if flow:
            flow_step = step
            assert step < bound, step
        else:
            assert step > 3 * flow_step, (step, flow_step)


def test_flow_follows_a_moving_face_without_lag():
    """The image moves 1.5 px and 0.2 degrees a frame; the landmarks follow it with noise. The flow's
    motion follows the true one within 0.3 px of the face's points after it has settled."""
    img, rng = _texture(3), np.random.default_rng(3)
    n = 40
    ms = [_similarity(1.5 * t, -0.8 * t, 0.2 * t, 1.0) for t in range(n)]
    frames = [_frame(img, m) for m in ms]
    truth = [apply_affine(m, POINTS) for m in ms]
    pts = [p + rng.normal(0, 0.7, size=p.shape) for p in truth]
    boxes = [CropBox(*(np.mean(p, 0) + rng.normal(0, 1, 2)), 160.0) for p in pts]
    first = fit_similarity(pts[0], truth[0])  # the motion is relative to the first frame's raw landmarks
    back = apply_affine(invert(first), truth[0])

    def error(got):
        return np.mean([np.linalg.norm(apply_affine(g, back) - tr, axis=-1).mean() for g, tr in zip(got[10:], truth[10:])])

    flow, landmarks = error(_run(frames, pts, boxes, True)), error(_run(frames, pts, boxes, False))
    assert flow < 0.1 and flow < 0.5 * landmarks, (flow, landmarks)


def test_a_flow_that_fails_holds_the_frame_and_unrelated_pixels_are_no_motion():
    """Between two unrelated images (a cut the shot test missed) LK's points agree on no similarity: no
    motion is measured, and the face's frame holds (pulled by the landmarks) instead of stepping."""
    fm = FaceMotion(MotionConfig())
    fm.update(POINTS, 0.0, BOX.side, warp(_texture(0), BOX, 128), BOX)
    assert fm._flow_step(warp(_texture(10), BOX, 128), BOX) is None
    before = fm.current.copy()
    fm.update(POINTS + [6.0, 0.0], 40.0, BOX.side, warp(_texture(11), BOX, 128), BOX)
    step = np.abs(fm.current - before).max()
    assert 0.0 < step < 0.1 * 6.0 + 1e-9, step  # the pull's share of the landmarks' 6 px, no jump


def test_the_image_must_be_the_square_crop():
    fm = FaceMotion(MotionConfig())
    with pytest.raises(ValueError, match="square crop"):
        fm.update(POINTS, 0.0, BOX.side, np.zeros((120, 160, 3), np.uint8), BOX)
