"""Overlay drawing: landmarks, contours, box, id, fps. Pure functions of an image and a result."""

from __future__ import annotations

import cv2
import numpy as np

from stableface import ibug
from stableface.types import FrameResult

PALETTE = [(80, 220, 80), (60, 160, 255), (255, 120, 60), (200, 80, 220), (40, 220, 220)]


def draw_result(image: np.ndarray, result: FrameResult, fps_text: str | None = None) -> np.ndarray:
    out = image.copy()
    scale = max(1.0, max(out.shape[:2]) / 640.0)
    for face in result.faces:
        colour = PALETTE[face.id % len(PALETTE)]
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, max(1, int(scale)), cv2.LINE_AA)
        cv2.putText(out, f"id {face.id}  {face.score:.2f}", (x0, max(12, y0 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45 * scale, colour, max(1, int(scale)), cv2.LINE_AA)
        pts = face.landmarks
        if len(pts) == ibug.K:
            for a, b, closed in ibug.CONTOURS:
                poly = np.round(pts[a:b] * 16).astype(np.int32)
                cv2.polylines(out, [poly], closed, colour, 1, cv2.LINE_AA, shift=4)
        for x, y in pts:
            cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), int(16 * 1.5 * scale), (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    if fps_text:
        cv2.putText(out, fps_text, (8, int(22 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 255, 255), max(1, int(scale)), cv2.LINE_AA)
    return out
