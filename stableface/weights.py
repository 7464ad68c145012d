"""Named weights -> files, checksums. Nothing is ever downloaded: everything loads from disk.

The default weights (named ``fast``, or ``default``: these names always mean the shipped default, even
where a folder of that name exists) ship inside the package (``stableface/weights``, the repository's
``weights/`` folder). ``--weights`` takes a named set (``accurate``, ``int8``: ``NAMED``; a path of that
name wins), a folder holding the four files below (the detectors default to the shipped ones), or a
path to a backbone ``.onnx`` (then the default detector and stabilizer are used with it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from stableface.onnx_util import WeightsError

FILES = {
    "backbone": "backbone.onnx",
    "stabilizer": "stabilizer.onnx",
    "detector": "face_detection_short_range.onnx",
    "detector_full": "face_detection_full_range.onnx",
}


def default_dir() -> Path:
    """The shipped weights: the installed package data, or the repository's ``weights/``."""
    try:
        import stableface.weights_data as pkg  # installed wheel / editable install

        return Path(pkg.__file__).parent
    except ImportError:
        return Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class WeightSet:
    backbone: Path
    stabilizer: Path
    detector: Path
    detector_full: Path | None


DEFAULT_NAMES = (None, "", "default", "fast")
"""What ``--weights`` calls the default set (``fast``, the name the command line documents)."""

NAMED = {"accurate": "accurate", "int8": "int8"}
"""Named weight sets that ship beside the default one: a folder of the shipped weights holding a backbone
and, where it has its own, a stabilizer (``--weights accurate``: the larger backbone and its stabilizer;
``--weights int8``: the default backbone's int8 twin, with the default stabilizer). The detectors are the
default's."""


def resolve(weights: str | Path | None = None, stabilizer: str | Path | None = None) -> WeightSet:
    base = default_dir()
    backbone = base / FILES["backbone"]
    if weights not in DEFAULT_NAMES:
        p = Path(weights)
        if str(weights) in NAMED and not p.exists():  # a shipped set (a path of that name wins)
            p = base / NAMED[str(weights)]
            if not (p / FILES["backbone"]).exists():
                raise WeightsError(f"--weights {weights}: this installation has no such weights ({p})")
        if p.is_dir():
            base, backbone = p, p / FILES["backbone"]
        elif p.suffix.lower() == ".onnx" or p.exists():
            backbone = p
        else:
            raise WeightsError(f"{weights}: no such weights file or folder")
    stab = Path(stabilizer) if stabilizer else base / FILES["stabilizer"]
    if not stabilizer and not stab.exists() and base.parent == default_dir() and base.name in NAMED.values():
        stab = default_dir() / FILES["stabilizer"]  # a shipped set without its own (int8): the default's
    det = base / FILES["detector"] if (base / FILES["detector"]).exists() else default_dir() / FILES["detector"]
    full = base / FILES["detector_full"]
    full = full if full.exists() else default_dir() / FILES["detector_full"]
    return WeightSet(backbone, stab, det, full if full.exists() else None)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
