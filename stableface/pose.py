"""Head yaw from 68 iBUG points: a PnP fit of a generic six-point 3D head.

The model (nose tip, chin, outer eye corners, mouth corners; millimetre-like units, x to the
image's right, y down, z away from the camera, nose tip at the origin) is the common generic head
used for head-pose estimation from 2D landmarks. The camera is a pinhole with focal length 2x
the image width (nearly orthographic, since the 300-W images are crops whose centre is not the
camera's) and the principal point at the centre. Yaw is the rotation about the vertical axis:
0 for a frontal face; its sign tells the side (the magnitude is what the benchmarks bin).
"""

from __future__ import annotations

import numpy as np

# iBUG index -> 3D point of the generic head.
POINTS = (30, 8, 36, 45, 48, 54)
MODEL = np.array([
    (0.0, 0.0, 0.0),  # nose tip
    (0.0, 330.0, 65.0),  # chin
    (-225.0, -170.0, 135.0),  # outer corner of the eye on the image's left
    (225.0, -170.0, 135.0),  # outer corner of the eye on the image's right
    (-150.0, 150.0, 125.0),  # mouth corners
    (150.0, 150.0, 125.0),
])


def camera(width: float, height: float) -> np.ndarray:
    f = 2.0 * width
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def yaw_degrees(points: np.ndarray, width: float, height: float) -> float:
    """Yaw of a face from its (68, 2) points in an image of ``width`` x ``height`` pixels."""
    import cv2

    img = np.asarray(points, np.float64)[list(POINTS)]
    ok, rvec, _ = cv2.solvePnP(MODEL, img, camera(width, height), None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("head pose fit failed")
    r, _ = cv2.Rodrigues(rvec)
    return float(np.degrees(np.arctan2(-r[2, 0], np.hypot(r[0, 0], r[1, 0]))))


def project(yaw_deg: float, width: float, height: float, distance: float = 3000.0) -> np.ndarray:
    """The six model points seen at ``yaw_deg`` (for tests): (6, 2) image points, in ``POINTS`` order."""
    import cv2

    a = np.radians(yaw_deg)
    r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    pts, _ = cv2.projectPoints(MODEL, cv2.Rodrigues(r)[0], np.array([0.0, 0.0, distance]), camera(width, height), None)
    return pts.reshape(-1, 2)


def face_yaw(points: np.ndarray) -> float:
    """Yaw of a face from its own (68, 2) points alone: the camera is centred on the points' box, with
    an image side of twice the box (as the 300-W crops are), so the result does not depend on where the
    face is in the frame."""
    p = np.asarray(points, np.float64)
    lo, hi = p.min(0), p.max(0)
    side = 2.0 * float(max(hi - lo))
    return yaw_degrees(p - (lo + hi) / 2 + side / 2, side, side)
