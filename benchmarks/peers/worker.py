"""Runs a peer landmark tracker on images, clips or frame stacks; runs inside the peers' venv.

    python worker.py METHOD JOB.json OUT.npz

METHOD: ``dlib`` (HOG face detector + the 68-point shape predictor of face-recognition-models)
or ``mediapipe`` (FaceMesh, 468 points, mediapipe 0.10.21). JOB.json:
``{"kind": "images", "paths": [...]}``, ``{"kind": "video", "path": ...}``,
``{"kind": "still", "path": "bases.npy", "sigma": s, "seed": n, "length": T}`` (still-face sequences,
state reset per sequence, frames from ``common.still_frame``) or
``{"kind": "speed", "path": clip, "frames": 200}``. Writes ``points`` (…, P, 2) with NaN where no
face was found, and timings. Needs only numpy, OpenCV and the peer itself.
"""

from __future__ import annotations

import json
import sys
import time

import cv2
import numpy as np
from common import still_frame


class Dlib:
    points = 68

    def __init__(self) -> None:
        import dlib
        import face_recognition_models

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self.dlib = dlib
        self.box = None

    def reset(self) -> None:
        self.box = None

    def detect(self, rgb: np.ndarray):
        faces = self.detector(rgb, 1)  # one upsampling: faces down to ~40 px
        return max(faces, key=lambda r: r.width() * r.height()) if len(faces) else None

    def landmarks(self, rgb: np.ndarray, box) -> np.ndarray:
        shape = self.predictor(rgb, box)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def __call__(self, rgb: np.ndarray, video: bool = False) -> np.ndarray | None:
        box = self.detect(rgb)  # dlib has no tracker of its own: users detect every frame
        return None if box is None else self.landmarks(rgb, box)


class MediaPipe:
    points = 468

    def __init__(self) -> None:
        import mediapipe as mp

        self.mp = mp
        self.static = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)
        self.video = None

    def reset(self) -> None:
        if self.video is not None:
            self.video.close()
        self.video = self.mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False)

    def __call__(self, rgb: np.ndarray, video: bool = False) -> np.ndarray | None:
        if video and self.video is None:
            self.reset()
        res = (self.video if video else self.static).process(rgb)
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        return np.array([[p.x * w, p.y * h] for p in lm], dtype=np.float64)


def rgb_of(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def frames_of(path: str, limit: int = 0) -> list[np.ndarray]:
    cap = cv2.VideoCapture(path)
    out = []
    while True:
        ok, f = cap.read()
        if not ok or (limit and len(out) >= limit):
            break
        out.append(f)
    cap.release()
    return out


def run(method, job: dict) -> dict:
    nan = np.full((method.points, 2), np.nan)
    kind = job["kind"]
    if kind == "images":
        pts, ms = [], []
        for p in job["paths"]:
            img = rgb_of(cv2.imread(p, cv2.IMREAD_COLOR))
            t0 = time.perf_counter()
            r = method(img, video=False)
            ms.append((time.perf_counter() - t0) * 1000)
            pts.append(nan if r is None else r)
        return {"points": np.stack(pts), "ms": np.array(ms)}
    if kind == "video":
        method.reset()
        pts = []
        for f in frames_of(job["path"]):
            r = method(rgb_of(f), video=True)
            pts.append(nan if r is None else r)
        return {"points": np.stack(pts)}
    if kind == "still":  # still-face sequences with fresh pixel noise per frame (common.still_frame)
        bases = np.load(job["path"])  # (N, S, S, 3) BGR
        n, length = len(bases), job["length"]
        out = np.full((n, length, method.points, 2), np.nan)
        check = int(still_frame(bases[0], job["sigma"], job["seed"], 0, 1).astype(np.int64).sum())
        for i in range(n):
            method.reset()
            for t in range(length):
                r = method(rgb_of(still_frame(bases[i], job["sigma"], job["seed"], i, t)), video=True)
                if r is not None:
                    out[i, t] = r
        return {"points": out, "checksum": np.array(check)}
    if kind == "speed":
        frames = [rgb_of(f) for f in frames_of(job["path"], job.get("frames", 200))]
        res = {}
        method.reset()
        t0 = time.perf_counter()
        for f in frames:
            method(f, video=False)
        res["with_detection_ms"] = (time.perf_counter() - t0) * 1000 / len(frames)
        if isinstance(method, Dlib):  # predictor only, on the first frame's detection
            box = method.detect(frames[0])
            t0 = time.perf_counter()
            for f in frames:
                method.landmarks(f, box)
        else:  # FaceMesh's own video mode: landmarks tracked from the previous frame, detector only when lost
            method.reset()
            method(frames[0], video=True)
            t0 = time.perf_counter()
            for f in frames:
                method(f, video=True)
        res["without_detection_ms"] = (time.perf_counter() - t0) * 1000 / len(frames)
        return {k: np.array(v) for k, v in res.items()}
    raise SystemExit(f"unknown job kind {kind!r}")


def main() -> None:
    name, job_path, out_path = sys.argv[1:4]
    method = {"dlib": Dlib, "mediapipe": MediaPipe}[name]()
    job = json.loads(open(job_path).read())
    np.savez(out_path, **run(method, job))


if __name__ == "__main__":
    main()
