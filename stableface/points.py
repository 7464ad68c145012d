"""Point subsets and correspondence maps, to score stableface's 68 iBUG points against
annotations in another layout (another 68-point order, WFLW's 98 points, a custom subset).

A :class:`PointMap` pairs stableface indices with annotation indices. Built-in maps:

* ``ibug68``: the identity (300-W, 300-VW, Menpo 68, dlib, OpenFace);
* ``mirror68``: 68 points in iBUG order but annotated on the other side of the face (subject's
  left where iBUG has the image's left);
* ``wflw98``: the usual 68-of-98 correspondence for WFLW (jaw every other point, the upper
  brow contours, the eyes' corners and lids, the whole mouth).

A map file is a CSV/TXT with one ``annotation_index,stableface_index`` pair per line
(``#`` comments allowed), or JSON: a list of such pairs, or an object
``{"stableface_index": annotation_index}``.

A subset spec is ``all`` or comma-separated group names (``jaw, brows, right_brow, left_brow,
nose, eyes, right_eye, left_eye, mouth, inner_mouth, outer_mouth``), indices and ranges
(``36-47``), all in stableface (iBUG) indices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stableface import ibug

GROUPS: dict[str, list[int]] = {name: list(r) for name, r in ibug.GROUPS.items()}
GROUPS["brows"] = GROUPS["right_brow"] + GROUPS["left_brow"]
GROUPS["eyes"] = GROUPS["right_eye"] + GROUPS["left_eye"]
GROUPS["outer_mouth"] = list(range(48, 60))
GROUPS["inner_mouth"] = list(range(60, 68))

# stableface index i -> WFLW-98 index _WFLW98[i]
_WFLW98 = (list(range(0, 33, 2)) + list(range(33, 38)) + list(range(42, 47)) + list(range(51, 61))
           + [61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75] + list(range(76, 96)))
BUILTIN = ("ibug68", "mirror68", "wflw98")


@dataclass(frozen=True)
class PointMap:
    """``ours[i]`` (a stableface index) corresponds to ``theirs[i]`` (an annotation index)."""

    ours: np.ndarray
    theirs: np.ndarray
    name: str = "custom"

    def __post_init__(self) -> None:
        if len(self.ours) != len(self.theirs) or not len(self.ours):
            raise ValueError(f"point map {self.name}: needs pairs of indices")
        if np.any(self.ours < 0) or np.any(self.ours >= ibug.K) or len(set(self.ours.tolist())) != len(self.ours):
            raise ValueError(f"point map {self.name}: stableface indices must be distinct and in 0..{ibug.K - 1}")
        if np.any(self.theirs < 0):
            raise ValueError(f"point map {self.name}: annotation indices must be >= 0")

    @property
    def annotation_points(self) -> int:
        """The least number of points an annotation must have for this map."""
        return int(self.theirs.max()) + 1

    def restrict(self, subset: list[int] | None) -> PointMap:
        """Only the pairs whose stableface index is in ``subset`` (None: all)."""
        if subset is None:
            return self
        keep = np.isin(self.ours, subset)
        if not keep.any():
            raise ValueError(f"point map {self.name}: none of the chosen points is in the map")
        return PointMap(self.ours[keep], self.theirs[keep], self.name)

    def check(self, gt: np.ndarray) -> None:
        if gt.shape[-2] < self.annotation_points:
            raise ValueError(f"point map {self.name}: annotations have {gt.shape[-2]} points, "
                             f"the map needs at least {self.annotation_points} (choose another --map)")

    def pairs(self, pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(…, 68, 2) predictions and (…, K_annotation, 2) annotations -> matched (…, n, 2) pairs."""
        self.check(gt)
        return pred[..., self.ours, :], gt[..., self.theirs, :]

    def interocular(self, gt: np.ndarray) -> np.ndarray:
        """Outer-eye-corner distance of the annotations, through the map."""
        self.check(gt)
        lookup = dict(zip(self.ours.tolist(), self.theirs.tolist(), strict=True))
        if ibug.LEFT_EYE_OUTER not in lookup or ibug.RIGHT_EYE_OUTER not in lookup:
            raise ValueError(f"point map {self.name}: has no outer eye corners (iBUG 36, 45) for inter-ocular "
                             "normalisation; use --norm bbox")
        a, b = gt[..., lookup[ibug.LEFT_EYE_OUTER], :], gt[..., lookup[ibug.RIGHT_EYE_OUTER], :]
        return np.linalg.norm(a - b, axis=-1)


def bbox_size(gt: np.ndarray) -> np.ndarray:
    """sqrt(width x height) of the annotation's bounding box, (…, K, 2) -> (…)."""
    span = np.nanmax(gt, axis=-2) - np.nanmin(gt, axis=-2)
    return np.sqrt(np.maximum(span[..., 0] * span[..., 1], 1e-12))


def load_map(spec: str | Path | None) -> PointMap:
    """A built-in map by name or a map file (see the module docstring)."""
    if spec in (None, "", "ibug68"):
        idx = np.arange(ibug.K)
        return PointMap(idx, idx, "ibug68")
    if spec == "mirror68":
        return PointMap(np.arange(ibug.K), ibug.FLIP_INDEX.copy(), "mirror68")
    if spec == "wflw98":
        return PointMap(np.arange(ibug.K), np.array(_WFLW98), "wflw98")
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"{spec}: no such point map (built-in: {', '.join(BUILTIN)}; or a .csv/.txt/.json file)")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            pairs = [(int(v), int(k)) for k, v in data.items()] if isinstance(data, dict) else [(int(a), int(b)) for a, b in data]
        else:
            pairs = []
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    a, b = line.replace(",", " ").split()[:2]
                    pairs.append((int(a), int(b)))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{spec}: not a point map ({exc})") from None
    if not pairs:
        raise ValueError(f"{spec}: no index pairs in the point map")
    theirs, ours = np.array(pairs).T
    return PointMap(ours, theirs, path.name)


def parse_subset(spec: str | None) -> list[int] | None:
    """Stableface indices named by ``spec`` (None for all)."""
    if spec in (None, "", "all"):
        return None
    out: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in GROUPS:
            out += GROUPS[part]
        elif part.isdigit():
            out.append(int(part))
        elif "-" in part and all(s.strip().isdigit() for s in part.split("-", 1)):
            a, b = (int(s) for s in part.split("-", 1))
            out += list(range(a, b + 1))
        else:
            raise ValueError(f"unknown point group or index {part!r} (groups: {', '.join(GROUPS)})")
    bad = [i for i in out if not 0 <= i < ibug.K]
    if bad:
        raise ValueError(f"point indices out of 0..{ibug.K - 1}: {bad[:5]}")
    return sorted(set(out))


@dataclass(frozen=True)
class Scorer:
    """Matches predictions to annotations through a map, on a subset, with a normalisation.

    ``full`` is the whole map (the normalisation uses it: the eye corners need not be in the
    subset); ``used`` is the part that is scored. ``norm``: ``iod`` (outer eye corners) or
    ``bbox`` (sqrt of the mapped annotation box's area).
    """

    full: PointMap
    used: PointMap
    norm: str = "iod"

    @classmethod
    def build(cls, map_spec: str | Path | None = None, subset: str | None = None, norm: str = "iod") -> Scorer:
        if norm not in ("iod", "bbox"):
            raise ValueError(f"unknown normalisation {norm!r}: use iod or bbox")
        full = load_map(map_spec)
        if norm == "iod":
            full.interocular(np.zeros((full.annotation_points, 2)))  # no eye corners: fail before any work
        return cls(full, full.restrict(parse_subset(subset)), norm)

    def normaliser(self, gt: np.ndarray) -> np.ndarray:
        """(…, K_annotation, 2) -> (…)."""
        if self.norm == "iod":
            return self.full.interocular(gt)
        return bbox_size(self.full.pairs(np.zeros(gt.shape[:-2] + (ibug.K, 2)), gt)[1])

    def pairs(self, pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.used.pairs(pred, gt)

    def to_ours(self, gt: np.ndarray) -> np.ndarray:
        """Annotations in stableface order (…, 68, 2), NaN where the map has no point."""
        out = np.full(gt.shape[:-2] + (ibug.K, 2), np.nan)
        out[..., self.full.ours, :] = gt[..., self.full.theirs, :]
        return out
