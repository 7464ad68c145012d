import numpy as np
from hypothesis import given, settings, strategies as st

from stableface import crop as C


@settings(max_examples=80, deadline=None)
@given(cx=st.floats(-500, 1500), cy=st.floats(-500, 1500), side=st.floats(5, 900), angle=st.floats(-3.1, 3.1))
def test_uncrop_inverts_crop(cx, cy, side, angle):
    box = C.CropBox(cx, cy, side, angle)
    pts = np.array([[cx, cy], [cx + 10, cy - 3], [0.0, 0.0]])
    back = C.to_source(C.to_crop(pts, box, 128), box, 128)
    assert np.allclose(back, pts, atol=1e-6 * max(1.0, abs(cx) + abs(cy) + side))


def test_centre_maps_to_crop_centre_and_scale():
    box = C.CropBox(100.0, 50.0, 64.0, 0.0)
    out = C.to_crop(np.array([[100.0, 50.0], [132.0, 50.0]]), box, 128)
    assert np.allclose(out, [[64, 64], [128, 64]])


def test_warp_puts_a_planted_dot_where_to_crop_says(rng):
    img = np.zeros((300, 400, 3), np.uint8)
    img[120, 210] = 255  # pixel centre at (210.5, 120.5)
    for angle in (0.0, 0.3, -1.0):
        box = C.CropBox(200.0, 130.0, 64.0, angle)
        patch = C.warp(img, box, 128).astype(float)[..., 0]
        ys, xs = np.mgrid[0:128, 0:128]
        cx, cy = (patch * (xs + 0.5)).sum() / patch.sum(), (patch * (ys + 0.5)).sum() / patch.sum()
        want = C.to_crop(np.array([[210.5, 120.5]]), box, 128)[0]
        assert np.hypot(cx - want[0], cy - want[1]) < 0.6


def test_box_from_landmarks_upright_and_rotated():
    pts = np.zeros((68, 2))
    pts[:, 0] = np.linspace(0, 100, 68)
    pts[:, 1] = np.linspace(0, 50, 68)
    box = C.box_from_landmarks(pts, 1.3)
    assert (box.cx, box.cy, box.side, box.angle) == (50.0, 25.0, 130.0, 0.0)
    # a face turned by 30 degrees: the eye line sets the crop angle
    th = np.deg2rad(30)
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    face = np.random.default_rng(0).uniform(-40, 40, size=(68, 2))
    face[36], face[45] = [-30, 0], [30, 0]
    turned = face @ r.T + [200, 100]
    rbox = C.box_from_landmarks(turned, 1.3, rotate=True)
    assert np.isclose(rbox.angle, th)
    upright = C.to_crop(turned, rbox, 128)
    assert abs(upright[45, 1] - upright[36, 1]) < 1e-6


def test_invalid_boxes_are_rejected():
    import pytest

    with pytest.raises(ValueError):
        C.CropBox(0, 0, 0)
    with pytest.raises(ValueError):
        C.CropBox(float("nan"), 0, 10)


def test_inner_is_the_largest_upright_square_inside_a_turned_crop():
    import cv2

    for angle in (0.0, 0.3, -0.5, np.pi / 4, 2.0):
        box = C.CropBox(200.0, 150.0, 120.0, angle)
        x0, y0, x1, y1 = box.inner()
        poly = box.corners().astype(np.float32)
        # each of its corners lies on the crop's edge: inside it, and no larger square is
        for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
            assert abs(cv2.pointPolygonTest(poly, (float(x), float(y)), True)) < 1e-3
    assert C.CropBox(200.0, 150.0, 120.0, 0.0).inner() == C.CropBox(200.0, 150.0, 120.0, 0.0).bounds()
    x0, _, x1, _ = C.CropBox(0.0, 0.0, 100.0, np.pi / 4).inner()
    assert abs((x1 - x0) - 100 / np.sqrt(2)) < 1e-9
