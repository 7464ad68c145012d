"""The iBUG 300-W 68-point scheme: file format, mirroring, named groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np

K = 68
SCHEME = "ibug68"
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45

GROUPS = {
    "jaw": range(0, 17),
    "right_brow": range(17, 22),
    "left_brow": range(22, 27),
    "nose": range(27, 36),
    "right_eye": range(36, 42),
    "left_eye": range(42, 48),
    "mouth": range(48, 68),
}

# Index of each point's mirror image under a horizontal flip.
_PAIRS = (
    [(i, 16 - i) for i in range(8)]
    + [(17 + i, 26 - i) for i in range(5)]
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
)
FLIP_INDEX = np.arange(K)
for _a, _b in _PAIRS:
    FLIP_INDEX[_a], FLIP_INDEX[_b] = _b, _a

# Polylines for drawing: (start, end, closed)
CONTOURS = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
            (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]


def read_pts(path: str | Path) -> np.ndarray:
    """Read an iBUG ``.pts`` file into a (K, 2) float32 array (coordinates as written)."""
    lines = Path(path).read_text().split("\n")
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "{")
        end = next(i for i, ln in enumerate(lines) if ln.strip() == "}")
    except StopIteration:
        raise ValueError(f"{path}: not an iBUG .pts file (no '{{' ... '}}' block)") from None
    pts = np.array([[float(v) for v in ln.split()[:2]] for ln in lines[start + 1:end] if ln.strip()], dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{path}: malformed point lines")
    return pts


def write_pts(path: str | Path, points: np.ndarray) -> None:
    pts = np.asarray(points)
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    Path(path).write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def list_annotated(root: str | Path) -> list[Path]:
    """Every image under ``root`` that has a ``.pts`` beside it, sorted by relative path."""
    root = Path(root)
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.with_suffix(".pts").exists()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def split(files: list[Path], every: int = 10) -> tuple[list[Path], list[Path]]:
    """The fixed validation split: every ``every``-th file (index 0, 10, 20, ...) of the sorted list."""
    val = [f for i, f in enumerate(files) if i % every == 0]
    train = [f for i, f in enumerate(files) if i % every != 0]
    return train, val


def training_split(root: str | Path, limit: int = 0) -> tuple[list[Path], list[Path]]:
    """(train, validation) files of an annotated folder; ``limit`` keeps a few (smoke tests)."""
    files = list_annotated(root)
    if not files:
        raise ValueError(f"{root}: no images with .pts annotations found")
    train, val = split(files)
    if limit:
        train, val = train[:limit], val[:max(2, limit // 4)]
    return train, val


def interocular(points: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance of (..., 68, 2) points."""
    p = np.asarray(points)
    return np.linalg.norm(p[..., LEFT_EYE_OUTER, :] - p[..., RIGHT_EYE_OUTER, :], axis=-1)
