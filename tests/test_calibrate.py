"""Calibration offsets: the backbone's landmark_offset and the stabilizer's output_offset, measured
and applied (stableface.calibrate, `stableface calibrate`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("onnx")

from click.testing import CliRunner  # noqa: E402

from stableface import codec  # noqa: E402
from stableface import calibrate as CAL  # noqa: E402
from stableface.backbone import HeatmapBackbone  # noqa: E402
from stableface.cli import main  # noqa: E402
from stableface.crop import CropBox, box_from_landmarks, to_crop, to_source, warp  # noqa: E402
from stableface.stabilizer import ConvLSTMStabilizer, ConvLSTMStep, Decoder  # noqa: E402
from stableface.weights import resolve  # noqa: E402


def _photo() -> np.ndarray:
    skimage = pytest.importorskip("skimage")
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def _own_landmarks(bb: HeatmapBackbone, img: np.ndarray) -> np.ndarray:
    """What the backbone itself places on the astronaut, from a crop found by iterating on its own points."""
    box = CropBox(225, 128, 120)
    for _ in range(3):
        pts = codec.decode_pdc(bb(warp(img, box, bb.size)[None])[0], bb.stride)[0]
        src = to_source(pts, box, bb.size)
        box = box_from_landmarks(src, bb.crop_scale, rotate=True)
    return src


def _dataset(tmp_path, img, points, n=3):
    root = tmp_path / "faces"
    root.mkdir()
    for i in range(n):
        cv2.imwrite(str(root / f"face{i}.png"), img)
        body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
        (root / f"face{i}.pts").write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n")
    return root


def test_decoder_adds_the_backbone_offset_to_every_point():
    pts = np.array([[40.3, 50.7], [70.0, 20.2]], np.float32)
    hm = codec.encode(pts, (32, 32), 4.0)
    off = np.array([[1.5, -0.5], [-2.0, 0.25]], np.float32)
    plain, _ = Decoder(128, 4.0).decode(hm)
    moved, _ = Decoder(128, 4.0, offset=off).decode(hm)
    np.testing.assert_allclose(moved - plain, off, atol=1e-5)
    src, _ = Decoder(128, 4.0, offset=off)(hm, CropBox(64, 64, 256))  # 2 source px per crop px
    np.testing.assert_allclose(src - (plain - 64) * 2 - 64, off * 2, atol=1e-4)


def test_backbone_calibration_finds_a_planted_annotation_offset(tmp_path):
    """Annotations = the backbone's own points moved by (+3, -2) source px: the measured offset, mapped
    back to source pixels, is that shift, and the calibrated backbone places the annotations."""
    bb = HeatmapBackbone(resolve().backbone, device="cpu", threads=1)
    img = _photo()
    own = _own_landmarks(bb, img)
    shift = np.array([3.0, -2.0])
    files = sorted(_dataset(tmp_path, img, own + shift).glob("*.png"))
    rep = CAL.backbone_offset(bb, files, views=4)
    side = box_from_landmarks(own, bb.crop_scale).side
    mean_src = np.asarray(rep["mean"]) * side / bb.size
    assert np.allclose(mean_src, shift, atol=0.6), mean_src
    out = tmp_path / "cal.onnx"
    CAL.write_offsets(bb.path, out, {"landmark_offset": (rep["offset"], {"planted": True})})
    cal = HeatmapBackbone(out, device="cpu")
    np.testing.assert_allclose(cal.offset, rep["offset"], atol=1e-4)
    assert cal.meta["landmark_offset_calibration"] == {"planted": True}
    box = box_from_landmarks(own + shift, bb.crop_scale, rotate=True)
    gt = to_crop(own + shift, box, bb.size)
    hm = bb(warp(img, box, bb.size)[None])[0]
    before = np.abs(Decoder(bb.size, bb.stride)(hm, box)[0] - (own + shift)).mean()
    after = np.abs(Decoder(bb.size, bb.stride, offset=cal.offset)(hm, box)[0] - (own + shift)).mean()
    assert after < 0.5 * before, (before, after)
    assert gt.shape == (68, 2)


def test_calibrate_backbone_command(tmp_path):
    bb = HeatmapBackbone(resolve().backbone, device="cpu", threads=1)
    img = _photo()
    root = _dataset(tmp_path, img, _own_landmarks(bb, img) + [2.0, 0.0], n=12)
    out = tmp_path / "b.onnx"
    r = CliRunner().invoke(main, ["calibrate", "backbone", str(bb.path), str(root), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "crop px" in r.output and HeatmapBackbone(out).offset is not None
    again = CliRunner().invoke(main, ["calibrate", "backbone", str(bb.path), str(root), "-o", str(out), "-q"])
    assert again.exit_code == 2 and "--overwrite" in again.output


def _still_sequences(bb, img, own, n=3, length=16, seed=0):
    """A still face with pixel noise, through one crop per sequence (as the real-motion ones are cut)."""
    rng = np.random.default_rng(seed)
    base = box_from_landmarks(own, bb.crop_scale, rotate=True)
    for _ in range(n):
        box = CropBox(base.cx + rng.normal(0, 3), base.cy + rng.normal(0, 3), base.side * rng.uniform(0.95, 1.05), base.angle)
        crops = []
        for _ in range(length):
            noisy = np.clip(img.astype(np.float32) + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            crops.append(warp(noisy, box, bb.size))
        yield np.stack(crops), to_crop(own, box, bb.size)


def test_stabilizer_output_offset_takes_the_measured_shift_off(tmp_path):
    """What stabilizer_offset measures is the runtime's mean (stabilized - raw); an output_offset is
    taken off the stabilized points (a planted one moves them by exactly minus itself), and the
    measured one brings them onto raw's on average."""
    bb = HeatmapBackbone(resolve().backbone, device="cpu", threads=1)
    img = _photo()
    own = _own_landmarks(bb, img)
    step = ConvLSTMStep(resolve().stabilizer, device="cpu", threads=1)
    step.output_offset = None  # the network as trained (the shipped file carries its calibration)
    rep = CAL.stabilizer_offset(step, bb, _still_sequences(bb, img, own))

    def mean_vs_raw(s: ConvLSTMStep) -> np.ndarray:
        d = []
        dec = Decoder(bb.size, bb.stride, offset=bb.offset)
        box = CropBox(bb.size / 2, bb.size / 2, float(bb.size))  # crop px = source px
        for crops, _ in _still_sequences(bb, img, own, seed=0):
            stab = ConvLSTMStabilizer(s, dec, deviation=None)  # the offset alone, without the runtime guard
            for t, hm in enumerate(bb(crops)):
                p, _ = stab.update(hm, box, t * 40.0)
                if t >= 4:
                    d.append((p - dec(hm, box)[0]).mean(axis=0))
        return np.mean(d, axis=0)

    network = mean_vs_raw(step)
    np.testing.assert_allclose(network, np.asarray(rep["mean"]), atol=0.02)
    planted = np.array([1.0, -0.6], np.float32)
    out = tmp_path / "p.onnx"
    CAL.write_offsets(step.path, out, {"output_offset": (rep["offset"] + planted, {"planted": True})})
    np.testing.assert_allclose(mean_vs_raw(ConvLSTMStep(out, device="cpu", threads=1)), -planted, atol=0.03)
    CAL.write_offsets(step.path, out, {"output_offset": (rep["offset"], {"planted": False})})
    cal = ConvLSTMStep(out, device="cpu", threads=1)
    np.testing.assert_allclose(cal.output_offset, rep["offset"], atol=1e-4)
    assert np.all(np.abs(mean_vs_raw(cal)) < 0.02)


def test_calibrate_stabilizer_without_the_clips_is_one_line(tmp_path):
    root = _dataset(tmp_path, _photo(), np.zeros((68, 2)) + 100, n=12)
    r = CliRunner().invoke(main, ["calibrate", "stabilizer", str(resolve().stabilizer), str(root), "-o",
                                  str(tmp_path / "s.onnx"), "--videos", str(tmp_path / "none"), "-q"])
    assert r.exit_code == 2 and "--videos" in r.output and "Traceback" not in r.output


def test_finetune_without_the_clips_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["finetune", str(tmp_path), "--backbone", str(resolve().backbone), "-o",
                                  str(tmp_path / "s.onnx"), "--videos", str(tmp_path / "none")])
    assert r.exit_code == 2 and "--videos" in r.output and "--sequences synthetic" in r.output
