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


class AnnotationError(ValueError):
    """An annotation file that is not what it should be; the message names the file."""


def read_pts(path: str | Path) -> np.ndarray:
    """Read an iBUG ``.pts`` file into a (K, 2) float32 array (coordinates as written).

    Raises :class:`AnnotationError` (naming the file and line) for anything else: no ``{ }`` block,
    a value that is not a number, a NaN or infinite point, a count that differs from ``n_points``.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "{")
        end = next(i for i, ln in enumerate(lines) if ln.strip() == "}")
    except StopIteration:
        raise AnnotationError(f"{path}: not an iBUG .pts file (no '{{' ... '}}' block)") from None
    pts = []
    for n in range(start + 1, end):
        text = lines[n].strip()
        if not text:
            continue
        vals = text.split()
        try:
            if len(vals) < 2:
                raise ValueError
            x, y = float(vals[0]), float(vals[1])
        except ValueError:
            raise AnnotationError(f"{path}, line {n + 1}: expected two numbers 'x y', got {text!r}") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise AnnotationError(f"{path}, line {n + 1}: point {len(pts)} is not finite ({text})")
        pts.append((x, y))
    if not pts:
        raise AnnotationError(f"{path}: no points")
    for ln in lines[:start]:
        key, _, value = ln.partition(":")
        if key.strip() == "n_points" and value.strip().isdigit() and int(value) != len(pts):
            raise AnnotationError(f"{path}: n_points says {int(value)}, the file has {len(pts)} points")
    return np.array(pts, dtype=np.float32)


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
