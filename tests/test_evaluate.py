"""`stableface evaluate` on annotated videos, point maps and subsets, plots: planted answers."""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from stableface import ibug, metrics
from stableface.cli import main
from stableface.evaluate import accuracy, find_annotations, load_annotation_track
from stableface.points import GROUPS, Scorer, load_map, parse_subset


def face(rng, n=1):
    """Plausible 68-point faces: a mean shape scaled to an IOD of 100 px, plus a little noise."""
    base = np.zeros((68, 2))
    base[:, 0] = np.linspace(-60, 60, 68)
    base[:, 1] = np.sin(np.arange(68)) * 40
    base[36], base[45] = (-50, 0), (50, 0)
    return base + 200 + rng.normal(0, 1, (n, 68, 2))


def test_subsets_parse_groups_indices_and_ranges():
    assert parse_subset("all") is None
    assert parse_subset("eyes") == list(range(36, 48))
    assert parse_subset("30, 48-50,jaw") == sorted(set(range(17)) | {30, 48, 49, 50})
    assert GROUPS["brows"] == list(range(17, 27))
    for bad in ("cheeks", "70", "10-80"):
        with pytest.raises(ValueError):
            parse_subset(bad)


def test_builtin_maps():
    wflw = load_map("wflw98")
    assert len(wflw.ours) == 68 and len(set(wflw.theirs.tolist())) == 68 and wflw.annotation_points == 96
    assert wflw.theirs[36] == 60 and wflw.theirs[45] == 72 and wflw.theirs[16] == 32 and wflw.theirs[48] == 76
    mirror = load_map("mirror68")
    assert mirror.theirs[36] == 45 and mirror.theirs[0] == 16 and mirror.theirs[30] == 30


def test_map_files_csv_and_json(tmp_path):
    (tmp_path / "m.csv").write_text("# annotation,stableface\n0,36\n1,45\n2,30\n")
    (tmp_path / "m.json").write_text(json.dumps({"36": 0, "45": 1, "30": 2}))
    for f in ("m.csv", "m.json"):
        m = load_map(tmp_path / f)
        assert dict(zip(m.ours.tolist(), m.theirs.tolist(), strict=True)) == {36: 0, 45: 1, 30: 2}
    (tmp_path / "bad.csv").write_text("0,99\n")
    with pytest.raises(ValueError, match="0..67"):
        load_map(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="no such point map"):
        load_map(tmp_path / "missing.csv")


def test_scorer_planted_error_through_a_map(rng, tmp_path):
    gt = face(rng)[0]
    pred = gt + np.array([3.0, 4.0])  # 5 px everywhere; IOD 100 px
    iod = float(ibug.interocular(gt))
    sc = Scorer.build()
    p, g = sc.pairs(pred, gt)
    assert np.linalg.norm(p - g, axis=-1).mean() / sc.normaliser(gt) == pytest.approx(5 / iod)
    # the same faces annotated mirrored (and in WFLW's 98 points): the same error through the map
    mir = Scorer.build("mirror68")
    p, g = mir.pairs(pred, gt[ibug.FLIP_INDEX])
    assert np.allclose(p - g, [3, 4]) and mir.normaliser(gt[ibug.FLIP_INDEX]) == pytest.approx(iod)
    gt98 = np.full((98, 2), 1e6)
    gt98[load_map("wflw98").theirs] = gt
    p, g = Scorer.build("wflw98", "eyes").pairs(pred, gt98)
    assert p.shape == (12, 2) and np.allclose(p - g, [3, 4])
    with pytest.raises(ValueError, match="annotations have 68 points, the map needs at least 96"):
        Scorer.build("wflw98").normaliser(gt)
    (tmp_path / "nose.csv").write_text("0,30\n1,31\n")
    with pytest.raises(ValueError, match="eye corners"):
        Scorer.build(str(tmp_path / "nose.csv"))
    assert Scorer.build(str(tmp_path / "nose.csv"), norm="bbox").used.annotation_points == 2


def test_accuracy_planted_drift_and_missed_frames(rng):
    t = 12
    gt = np.repeat(face(rng), t, axis=0) + np.arange(t)[:, None, None] * np.array([2.0, 0.0])  # moves 2 px/frame
    pred = gt + np.array([0.0, 1.0]) + np.arange(t)[:, None, None] * np.array([0.5, 0.0])  # lags by +0.5 px/frame
    pred[5] = np.nan  # the tracker lost frame 5
    iod = ibug.interocular(gt)
    m = accuracy(pred, gt, Scorer.build())
    ok = np.arange(t) != 5
    want_nme = 100 * (np.hypot(np.arange(t) * 0.5, 1.0) / iod)[ok].mean()
    assert m["missed"] == 1 and m["annotated"] == t
    assert m["nme"] == pytest.approx(want_nme)
    assert m["jitter_error"] == pytest.approx(100 * (0.5 / iod[1:])[[i for i in range(t - 1) if i not in (4, 5)]].mean())
    assert m["nrmse"] == pytest.approx(want_nme)  # the same offset at every point: RMS = mean


def test_accuracy_planted_video_metrics(rng):
    sc = Scorer.build()
    t = np.arange(20)[:, None, None]
    gt = np.repeat(face(rng), 20, axis=0) + t * np.array([2.0, 1.0])  # constant velocity
    pred = np.full_like(gt, np.nan)
    pred[3:] = gt[:-3]  # 3 frames behind, the first 3 missed
    pred[10] = np.nan
    m = accuracy(pred, gt, sc)
    assert m["missed"] == 4 and m["time_delay"] == pytest.approx(3.0)
    assert m["nmj"] == pytest.approx(0.0, abs=1e-9) and m["second_diff_error"] == pytest.approx(0.0, abs=1e-9)
    assert m["fhr_second_diff"] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(m["lag_frames"])  # constant velocity: no shift fits better than another
    # a still face and a +-1 px flicker along x
    still = np.repeat(face(rng), 12, axis=0)
    flick = still + np.array([1.0, -1.0] * 6)[:, None, None] * [1.0, 0.0]
    m = accuracy(flick, still, sc)
    span = still[0].max(0) - still[0].min(0)
    assert m["nmj"] == pytest.approx(100 * 2 / (np.sqrt(span.prod()) / 256))  # steps of 2 px
    assert m["fhr_second_diff"] == pytest.approx(2 / (span.max() / 100))  # 2 px off the neighbours' midpoint
    assert m["second_diff_error"] == pytest.approx(100 * 4 / ibug.interocular(still[0]))  # second differences of 4 px
    assert np.isnan(m["time_delay"]) and np.isnan(m["lag_frames"])  # nothing moves
    # a face on a curved path, 3 frames behind: the lag; 2 frames ahead: negative
    s = np.arange(60)[:, None, None]
    curve = np.repeat(face(rng), 60, axis=0) + np.concatenate([20 * np.sin(s / 5), 10 * np.cos(s / 7)], axis=-1)
    behind, ahead = np.full_like(curve, np.nan), np.full_like(curve, np.nan)
    behind[3:], ahead[:-2] = curve[:-3], curve[2:]
    assert accuracy(behind, curve, sc)["lag_frames"] == pytest.approx(3.0, abs=0.05)
    assert accuracy(ahead, curve, sc)["lag_frames"] == pytest.approx(-2.0, abs=0.05)
    assert accuracy(behind, curve, sc, max_lag=2)["lag_frames"] == 2.0  # at the edge of the range: not refined


def test_annotation_files_npy_and_pts_folder(tmp_path, rng):
    gt = face(rng, 4)
    np.save(tmp_path / "clip.npy", gt)
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert find_annotations(tmp_path / "clip.mp4") == tmp_path / "clip.npy"
    folder = tmp_path / "other"
    folder.mkdir()
    for i, g in enumerate(gt):
        ibug.write_pts(folder / f"{i:06d}.pts", g)
    (tmp_path / "other.mp4").write_bytes(b"")
    assert find_annotations(tmp_path / "other.mp4") == folder
    assert np.allclose(load_annotation_track(folder), gt, atol=1e-3)
    np.save(tmp_path / "bad.npy", np.zeros((4, 68)))
    with pytest.raises(ValueError, match="shape"):
        load_annotation_track(tmp_path / "bad.npy")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 10-frame clip of the demo photo and the raw pipeline's own landmarks on it."""
    pytest.importorskip("skimage")
    from stableface.demo import make_clip
    from stableface.evaluate import run_tracks
    from stableface.pipeline import Pipeline, PipelineConfig

    d = tmp_path_factory.mktemp("annotated")
    frames, _ = make_clip(10, noise=4.0)
    path = d / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, frames[0].shape[1::-1])
    for f in frames:
        w.write(f)
    w.release()
    raw = run_tracks(str(path), {"none": Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer="none"))})["none"]
    assert np.isfinite(raw).all()
    return path, raw


def test_evaluate_annotated_video_planted_answers(clip, tmp_path):
    path, raw = clip
    runner = CliRunner()
    np.save(tmp_path / "same.npy", raw)
    res = runner.invoke(main, ["evaluate", str(path), "--annotations", str(tmp_path / "same.npy"), "--stabilizers",
                               "none,convlstm", "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)["mean"]
    assert out["none"]["nme"] == pytest.approx(0.0, abs=1e-9) and out["none"]["jitter_error"] == pytest.approx(0.0, abs=1e-9)
    assert out["convlstm"]["nme"] > 0 and out["none"]["missed"] == 0
    for key in ("nmj", "second_diff_error", "time_delay", "lag_frames"):  # the annotations are the raw track itself
        assert out["none"][key] == pytest.approx(0.0, abs=1e-9), key
    own = metrics.fhr_second_diff(raw, raw)  # FHR's term scores the prediction's own second difference
    assert own > 0 and out["none"]["fhr_second_diff"] == pytest.approx(own)
    assert out["convlstm"]["nmj"] > 0
    # only the first frame annotated: no frame pairs, so the video metrics are null in strict JSON
    lone = np.full_like(raw, np.nan)
    lone[0] = raw[0]
    np.save(tmp_path / "lone.npy", lone)
    res = runner.invoke(main, ["evaluate", str(path), "--annotations", str(tmp_path / "lone.npy"), "--stabilizers", "none",
                               "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    assert "NaN" not in res.output
    got = json.loads(res.output, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    video = got["videos"]["clip.avi"]["none"]
    assert video["nme"] == pytest.approx(0.0, abs=1e-9) and video["annotated"] == 1
    for key in ("jitter_error", "second_diff_error", "nmj", "time_delay", "fhr_second_diff", "lag_frames"):
        assert video[key] is None and got["mean"]["none"][key] is None, key
    res = runner.invoke(main, ["evaluate", str(path), "--annotations", str(tmp_path / "same.npy"), "--stabilizers", "none",
                               "-q"])
    assert res.exit_code == 0, res.output
    head = next(line for line in res.output.splitlines() if line.startswith("| stabilizer"))
    for col in ("2nd-diff error %", "NMJ", "FHR time delay (frames)", "FHR 2nd diff (% box)", "lag (frames)"):
        assert f"| {col} |" in head, col
    row = next(line for line in res.output.splitlines() if line.startswith("| none |")).split("|")[1:-1]
    cells = dict(zip([c.strip() for c in head.split("|")[1:-1]], [c.strip() for c in row], strict=True))
    assert cells["NMJ"] == "0.0" and cells["lag (frames)"] in ("0.00", "-0.00")
    # annotations 2 px to the right, written mirrored, as a folder of .pts: error 2 px / IOD per frame
    folder = tmp_path / "mirrored"
    folder.mkdir()
    for i, g in enumerate(raw + [2.0, 0.0]):
        ibug.write_pts(folder / f"{i:04d}.pts", g[ibug.FLIP_INDEX])
    plots = tmp_path / "plots"
    res = runner.invoke(main, ["evaluate", str(path), "--annotations", str(folder), "--map", "mirror68", "--stabilizers",
                               "none", "--format", "json", "-q", "--plot", str(plots)])
    assert res.exit_code == 0, res.output
    want = 100 * np.mean(2.0 / ibug.interocular(raw))
    got = json.loads(res.output)["mean"]["none"]
    assert got["nme"] == pytest.approx(want, rel=1e-3) and got["jitter_error"] < 0.005  # .pts keep 3 decimals
    assert got["second_diff_error"] < 0.01 and abs(got["lag_frames"]) < 0.05  # an offset is neither acceleration nor lag
    for name in ("clip_trajectories.png", "clip_jitter.png", "clip_error_cdf.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_unannotated_video_table_and_bad_options(clip, tmp_path):
    path, _ = clip
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", str(path), "--stabilizers", "none", "-q"])
    assert res.exit_code == 0 and "| none |" in res.output and "NME" not in res.output
    for args in (["--points", "cheeks"], ["--map", str(tmp_path / "nope.csv")], ["--landmarks", "99"]):
        res = runner.invoke(main, ["evaluate", str(path), *args])
        assert res.exit_code == 2, args
