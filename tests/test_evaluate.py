"""`stableface evaluate` on annotated videos, point maps and subsets, plots: planted answers."""

import json
import re

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


def strict_json(text):
    def no_constant(name):
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constant)


def test_per_frame_pts_are_matched_by_the_number_in_their_names(tmp_path, rng):
    from stableface.evaluate import frame_numbers

    gt = face(rng, 6)
    vw = tmp_path / "vw"  # 300-VW: 000001.pts is the first frame; 000004.pts is missing
    vw.mkdir()
    for i in (0, 1, 2, 4, 5):
        ibug.write_pts(vw / f"{i + 1:06d}.pts", gt[i])
    track = load_annotation_track(vw)
    assert track.shape == (6, 68, 2)
    assert np.isnan(track[3]).all() and np.allclose(track[[0, 1, 2, 4, 5]], gt[[0, 1, 2, 4, 5]], atol=1e-3)
    zero = tmp_path / "zero"  # 0-based names with a prefix; frame 2 missing
    zero.mkdir()
    for i in (0, 1, 3):
        ibug.write_pts(zero / f"frame_{i:06d}.pts", gt[i])
    track = load_annotation_track(zero)
    assert track.shape == (4, 68, 2) and np.isnan(track[2]).all() and np.allclose(track[3], gt[3], atol=1e-3)
    assert frame_numbers([tmp_path / "clip7_000010.pts", tmp_path / "clip7_000011.pts"]) == [10, 11]


def test_evaluate_reports_annotation_gaps_instead_of_shifting_frames(clip, tmp_path):
    path, raw = clip
    folder = tmp_path / "annot"
    folder.mkdir()
    for i, g in enumerate(raw):
        if i != 3:
            ibug.write_pts(folder / f"{i + 1:06d}.pts", g)  # 300-VW names; frame 3 (000004.pts) missing
    res = CliRunner().invoke(main, ["evaluate", str(path), "--annotations", str(folder), "--stabilizers", "none",
                                    "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    m = strict_json(res.output)["videos"]["clip.avi"]["none"]
    assert m["annotated"] == 9 and m["annotation_missing"] == 1 and m["missed"] == 0
    assert m["nme"] == pytest.approx(0.0, abs=1e-3)  # each file scored against its own frame
    res = CliRunner().invoke(main, ["evaluate", str(path), "--annotations", str(folder), "--stabilizers", "none", "-q"])
    assert res.exit_code == 0 and "1 frames without annotation, not scored" in res.output


def test_evaluate_json_has_null_where_a_number_is_undefined(tmp_path):
    blank = tmp_path / "blank.avi"
    w = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
    for _ in range(3):
        w.write(np.full((64, 64, 3), 90, np.uint8))
    w.release()
    res = CliRunner().invoke(main, ["evaluate", str(blank), "--stabilizers", "none", "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    assert "NaN" not in res.output and "Infinity" not in res.output
    doc = strict_json(res.output)
    assert doc["videos"]["blank.avi"]["none"]["allan_dev_px"] is None
    assert doc["mean"]["none"]["allan_dev_pct_iod"] is None


@pytest.mark.parametrize("case,problem", [
    ("word", r", line 7: expected two numbers 'x y', got '12\.0 abc'"),
    ("nan", r", line 7: point 3 is not finite \(nan 5\)"),
    ("sixty", r": 60 points; the ibug68 map needs 68 \(choose another --map\)"),
    ("header", r": n_points says 68, the file has 67 points"),
])
def test_a_bad_pts_file_is_one_line_naming_it_exit_1(tmp_path, rng, case, problem):
    gt = face(rng, 3)
    folder = tmp_path / "annot"
    folder.mkdir()
    for i, g in enumerate(gt):
        ibug.write_pts(folder / f"{i:06d}.pts", g)
    bad = folder / "000001.pts"
    lines = bad.read_text().splitlines()
    if case == "word":
        lines[6] = "12.0 abc"
    elif case == "nan":
        lines[6] = "nan 5"
    elif case == "sixty":
        ibug.write_pts(bad, gt[1][:60])
        lines = bad.read_text().splitlines()
    else:
        del lines[6]
    bad.write_text("\n".join(lines) + "\n")
    video = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
    for _ in range(3):
        w.write(np.full((64, 64, 3), 90, np.uint8))
    w.release()
    res = CliRunner().invoke(main, ["evaluate", str(video), "--annotations", str(folder), "--stabilizers", "none", "-q"])
    assert res.exit_code == 1 and res.exception is None or isinstance(res.exception, SystemExit)
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"stableface: error: {re.escape(str(bad))}{problem}", lines[0]), res.output
    # the same file beside an image of an annotated-image folder
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "face.png"), np.full((64, 64, 3), 90, np.uint8))
    (images / "face.pts").write_text(bad.read_text())
    res = CliRunner().invoke(main, ["evaluate", str(images), "-q"])
    assert res.exit_code == 1
    assert re.fullmatch(rf"stableface: error: {re.escape(str(images / 'face.pts'))}{problem}", res.output.strip()), res.output


def test_tracks_stay_aligned_with_the_annotations_when_frames_cannot_be_decoded(tmp_path):
    """Row i is the source's frame i: a corrupt stretch leaves NaN rows, it does not shift the rest."""
    pytest.importorskip("av")
    from stableface.evaluate import run_tracks
    from stableface.types import Face, FrameResult

    from .media import corrupt_middle, write_clip

    clip = write_clip(tmp_path / "clip.mp4", n=120)
    bad = corrupt_middle(clip, tmp_path / "bad.mp4", clip.stat().st_size // 4)

    class Marks:  # a face whose landmarks are the frame number: where each row came from
        def stream(self, src):
            for frame in src:
                pts = np.full((ibug.K, 2), float(frame.index))
                yield frame, FrameResult(frame.index, frame.timestamp_ms, (Face(0, (0, 0, 1, 1), 1.0, pts, np.ones(ibug.K)),))

    track = run_tracks(str(bad), {"marks": Marks()})["marks"]
    assert track.shape == (120, ibug.K, 2)
    seen = np.isfinite(track[:, 0, 0])
    assert 0 < (~seen).sum() < 100
    assert (track[seen, 0, 0] == np.flatnonzero(seen)).all()


def test_evaluate_scores_the_readable_videos_and_exits_1_for_the_others(tmp_path):
    """A folder with an unreadable video beside a good one: one line names it, the good one is scored, exit 1;
    an incomplete video (frames that cannot be decoded) also exits 1; a missing path is one line, exit 1;
    and no traceback in any of them."""
    pytest.importorskip("av")
    from .media import corrupt_middle, write_clip

    folder = tmp_path / "videos"
    folder.mkdir()
    write_clip(folder / "good.mp4", n=20)
    (folder / "junk.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    r = CliRunner().invoke(main, ["evaluate", str(folder), "--stabilizers", "none", "--format", "json"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "junk.mp4: not a readable video" in r.stderr
    assert "1 of 2 video(s) failed or were incomplete: junk.mp4 (not readable)" in r.stderr
    assert list(json.loads(r.stdout)["videos"]) == ["good.mp4"]
    r = CliRunner().invoke(main, ["evaluate", str(folder / "junk.mp4")])
    assert r.exit_code == 1 and r.stderr.strip() == f"stableface: error: {folder / 'junk.mp4'}: not a readable video"
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "nosuch.mp4")])
    assert r.exit_code == 1 and r.stderr.strip() == f"stableface: error: {tmp_path / 'nosuch.mp4'}: no such file or folder"
    clip = write_clip(tmp_path / "clip.mp4", n=120)
    bad = corrupt_middle(clip, tmp_path / "bad.mp4", clip.stat().st_size // 4)
    r = CliRunner().invoke(main, ["evaluate", str(bad), "--stabilizers", "none"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert re.search(r"1 of 1 video\(s\) failed or were incomplete: bad.mp4 \(\d+ frames not decoded\)", r.stderr)
