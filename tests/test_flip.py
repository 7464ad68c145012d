"""--flip-test: each crop's heatmaps averaged with its mirror image's, turned back."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from stableface import codec, ibug
from stableface.backbone import HeatmapBackbone
from stableface.cli import main
from stableface.crop import CropBox, warp
from stableface.weights import resolve


def _crop(bb):
    skimage = pytest.importorskip("skimage")
    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    return warp(photo, CropBox(225, 128, 120), bb.size)


def test_flip_test_maps_of_a_mirror_image_are_the_mirrored_maps():
    """The maps of the mirrored crop are this crop's maps flipped in x with the iBUG mirror index
    applied (left eye <-> right eye): exactly, since both average the same two network runs."""
    bb = HeatmapBackbone(resolve().backbone, device="cpu", threads=1, flip_test=True)
    crop = _crop(bb)
    a, b = bb(np.stack([crop, crop[:, ::-1]]))
    np.testing.assert_allclose(b, a[ibug.FLIP_INDEX, :, ::-1], atol=1e-5)
    assert not np.allclose(b, a[:, :, ::-1], atol=1e-3)  # the index matters: the maps are not symmetric


def test_flip_test_places_the_same_face_as_one_pass():
    plain = HeatmapBackbone(resolve().backbone, device="cpu", threads=1)
    flip = HeatmapBackbone(resolve().backbone, device="cpu", threads=1, flip_test=True)
    crop = _crop(plain)[None]
    p = codec.decode_pdc(plain(crop), plain.stride)[0][0]
    q = codec.decode_pdc(flip(crop), flip.stride)[0][0]
    d = np.linalg.norm(p - q, axis=-1)
    assert np.median(d) < 0.5 * plain.stride and d.max() < 3 * plain.stride
    assert d.mean() > 0.01  # it did change something


def test_track_flip_test(tmp_path):
    skimage = pytest.importorskip("skimage")
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "a.json"
    r = CliRunner().invoke(main, ["track", str(img), "-o", str(out), "--flip-test", "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["frames"][0]["faces"], doc
