"""Detector combinations (merge, union, tiles) on planted detectors, and the yaw estimate on planted heads."""

import numpy as np
import pytest

from stableface import pose
from stableface.detector import (COVERED, HALF_TILE_SCORE, WEAK_SCORE, BlazeFace, PartialDetections, TiledDetector, UnionDetector,
                                 ZoomCheck, merge, small_face_tiles)
from stableface.detector import _share_under as detector_share
from stableface.types import Detection


class Squares:
    """Finds the white squares of a frame whose side is at least ``reach`` x the frame's longer side
    (a detector that misses faces that are small in the frame); score = 0.9. Counts its calls."""

    def __init__(self, reach=0.1):
        self.reach, self.calls = reach, 0

    def detect(self, image):
        import cv2

        self.calls += 1
        n, _, stats, _ = cv2.connectedComponentsWithStats((image[..., 0] > 128).astype(np.uint8))
        out = []
        for x, y, w, h, _ in stats[1:n]:
            if max(w, h) >= self.reach * max(image.shape[:2]):
                out.append(Detection((float(x), float(y), float(x + w), float(y + h)), 0.9))
        return out


class Fixed:
    def __init__(self, found):
        self.found = found

    def detect(self, image):
        return list(self.found)


def frame_with(squares, w=640, h=360):
    img = np.zeros((h, w, 3), np.uint8)
    for x, y, s in squares:
        img[y:y + s, x:x + s] = 255
    return img


def test_merge_keeps_the_best_of_overlapping_detections_and_separate_faces():
    a, b, c = Detection((0, 0, 10, 10), 0.7), Detection((1, 0, 11, 10), 0.9), Detection((50, 50, 60, 60), 0.8)
    assert merge([a, b, c]) == [b, c]
    assert merge([]) == []


def test_union_runs_every_detector_and_merges():
    near = Fixed([Detection((100, 100, 200, 200), 0.95)])
    far = Fixed([Detection((102, 100, 202, 200), 0.5), Detection((400, 50, 420, 70), 0.45)])
    found = UnionDetector([near, far]).detect(frame_with([]))
    assert [d.box for d in found] == [(100, 100, 200, 200), (400, 50, 420, 70)]


def test_tiles_find_small_faces_at_their_place_once():
    small = [(40, 40, 24), (300, 200, 24), (590, 300, 24)]  # 24 px: under the planted reach of 64 px in 640
    img = frame_with(small + [(150, 120, 100)])
    assert [d.box for d in Squares().detect(img)] == [(150.0, 120.0, 250.0, 220.0)]
    tiled = TiledDetector(Squares(), tile=0.5)
    found = tiled.detect(img)
    boxes = sorted(d.box for d in found)
    assert boxes == sorted([(float(x), float(y), float(x + s), float(y + s)) for x, y, s in small]
                           + [(150.0, 120.0, 250.0, 220.0)])
    wins = tiled.windows(640, 360)
    assert all(s == 180 for _, _, s in wins) and {x for x, _, _ in wins} >= {0, 460} and {y for _, y, _ in wins} == {0, 90, 180}
    assert tiled.detector.calls == 1 + len(wins)


def test_a_face_cut_by_a_tile_border_comes_from_another_tile():
    img = frame_with([(170, 30, 30)])  # crosses x = 180, the right edge of the first tile
    found = TiledDetector(Squares(reach=0.15), tile=0.5, whole=False).detect(img)
    assert [d.box for d in found] == [(170.0, 30.0, 200.0, 60.0)]


def test_one_tile_frame_runs_the_detector_once():
    det = Squares()
    TiledDetector(det).detect(frame_with([], 200, 200))
    assert det.calls == 1


class Named:
    """Records its name per call and finds one box, or the squares of ``Squares`` when given one."""

    def __init__(self, name, calls, box=(0.0, 0.0, 10.0, 10.0), squares=None):
        self.name, self.calls, self.box, self.squares = name, calls, box, squares

    def detect(self, image):
        self.calls.append((self.name, image.shape[1]))
        return self.squares.detect(image) if self.squares else [Detection(self.box, 0.9)]


def test_union_spreads_the_tiles_over_searches_and_redetections_and_detect_runs_them_all():
    calls = []
    tiles = TiledDetector(Named("tile", calls), whole=False)  # 640x360: three tiles of 360 px
    u = UnionDetector([Named("short", calls), Named("full", calls, (50.0, 50.0, 60.0, 60.0))], tiles)
    img = frame_with([])
    assert [x for x, _, _ in tiles.tiles(640, 360)] == [0, 140, 280]
    u.detect(img)
    assert calls == [("short", 640), ("full", 640)] + [("tile", 360)] * 3
    calls.clear()
    for _ in range(9):
        u.redetect(img)
    assert [c[0] for c in calls] == ["short", "full", "tile"] * 3  # one model per re-detection
    calls.clear()
    for _ in range(4):
        u.search(img)
    assert [c[0] for c in calls] == ["short", "full", "tile"] * 4
    calls.clear()
    u.redetect(img, turn=5)  # the block's job, whatever came before: the second tile
    assert calls == [("tile", 360)]
    calls.clear()
    square = frame_with([], 200, 200)  # one tile is the whole frame: nothing to tile
    u.detect(square)
    u.redetect(square, 2)
    u.search(square)
    assert [c[0] for c in calls] == ["short", "full", "short", "short", "full"]


def test_a_small_face_only_a_tile_shows_is_found_by_the_third_search_and_placed():
    small = (500, 250, 40)  # 40 px: under the planted reach of 64 px in a 640 frame, 40/360 > 0.1 in a tile
    img = frame_with([small])
    calls = []
    u = UnionDetector([Named("short", calls, squares=Squares()), Named("full", calls, squares=Squares())],
                      TiledDetector(Named("tile", calls, squares=Squares()), whole=False))
    found = [u.search(img) for _ in range(3)]
    assert found[0] == [] and found[1] == []  # tiles 0 and 1 do not hold the whole face
    assert [d.box for d in found[2]] == [(500.0, 250.0, 540.0, 290.0)]
    assert [d.box for d in u.detect(img)] == [(500.0, 250.0, 540.0, 290.0)]


def test_the_shipped_pipeline_tiles_its_full_range_detector_unless_told_not_to():
    from stableface.pipeline import Pipeline, PipelineConfig

    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer="none"))
    levels = pipe.detector.levels
    short, full = pipe.detector.detectors
    assert [t.tile for t in levels] == [1.0, 0.5] and levels[0].detector is full and levels[0].check is None
    assert levels[1].min_score == HALF_TILE_SCORE > levels[0].min_score
    # the half tiles: the full-range model (its session) down to WEAK_SCORE, weak ones checked by the short-range model
    weak = levels[1].detector
    assert isinstance(weak, BlazeFace) and weak.session is full.session and weak.score_threshold == WEAK_SCORE
    assert full.score_threshold == 0.4  # (the copy left the model's own threshold as it was)
    assert isinstance(levels[1].check, ZoomCheck) and levels[1].check.looks == [(short, 0.6), (full, 0.5)]
    assert pipe.detector.thread_safe
    # a look that may keep state between calls makes the detector unsafe to run in the reader thread
    check = levels[1].check
    check.looks = [(short, 0.6), (Squares(), 0.5)]
    assert not check.thread_safe and not levels[1].thread_safe and not pipe.detector.thread_safe
    check.looks = [(short, 0.6), (full, 0.5)]
    assert pipe.detector.thread_safe
    levels[1].check = lambda image, d: True  # a check that says nothing of its state
    assert not pipe.detector.thread_safe and not pipe._by_block()
    off = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer="none", detect_tiles=False))
    assert off.detector.levels == []


def test_half_height_tiles_run_on_frames_of_256_px_and_more_and_keep_only_sure_detections():
    half = small_face_tiles(Squares())[1]
    assert len(half.tiles(640, 360)) == 15 and len(half.tiles(512, 512)) == 9 and len(half.tiles(720, 576)) == 9
    assert half.tiles(320, 240) == [] and half.tiles(250, 400) == []  # tiles under 128 px
    found = [Detection((10.0, 10.0, 30.0, 30.0), HALF_TILE_SCORE - 0.01), Detection((60.0, 60.0, 80.0, 80.0), HALF_TILE_SCORE)]
    half.detector = Fixed(found)
    assert [d.box for d in half.detect_window(frame_with([]), (0, 0, 180))] == [(60.0, 60.0, 80.0, 80.0)]


def test_a_weak_half_tile_detection_is_kept_only_when_the_second_look_finds_the_face():
    looked = []

    def check(image, d):
        looked.append(d.box)
        return d.box[0] == 210.0  # planted: the first weak one (in frame coordinates) is a face, the second is not

    weak_face, weak_texture = Detection((10.0, 10.0, 30.0, 30.0), 0.4), Detection((100.0, 10.0, 120.0, 30.0), 0.5)
    sure = Detection((60.0, 60.0, 80.0, 80.0), HALF_TILE_SCORE)
    too_weak = Detection((10.0, 100.0, 30.0, 120.0), WEAK_SCORE - 0.01)  # under the check's floor: not looked at
    half = TiledDetector(Fixed([weak_face, weak_texture, sure, too_weak]), tile=0.5, whole=False,
                         min_score=HALF_TILE_SCORE, check=check, check_from=WEAK_SCORE)
    found = half.detect_window(frame_with([]), (200, 100, 180))
    assert [d.box for d in found] == [(210.0, 110.0, 230.0, 130.0), (260.0, 160.0, 280.0, 180.0)]
    # the check sees the weak ones only, in frame coordinates (it looks around them in the whole frame)
    assert looked == [(210.0, 110.0, 230.0, 130.0), (300.0, 110.0, 320.0, 130.0)]


def test_the_second_look_finds_a_face_centred_in_three_times_its_box_and_nothing_else():
    seen = []

    class Looking(Squares):
        def detect(self, image):
            seen.append(image.shape[:2])
            return super().detect(image)

    img = frame_with([(100, 100, 24), (300, 100, 24)])
    look = ZoomCheck([(Looking(reach=0.1), 0.6)])  # (Squares scores 0.9)
    assert look(img, Detection((100.0, 100.0, 124.0, 124.0), 0.4))  # the square, at the middle of a 72 px look
    assert seen == [(72, 72)]
    assert not look(img, Detection((160.0, 100.0, 184.0, 124.0), 0.4))  # beside it: nothing at the middle
    assert not look(img, Detection((100.0, 100.0, 112.0, 112.0), 0.4))  # the square twice the box's side: another size
    big = frame_with([(82, 82, 60)])  # a square of 2.5 x the box, wholly inside the 72 px look and centred: too large
    assert not look(big, Detection((100.0, 100.0, 124.0, 124.0), 0.4))
    assert ZoomCheck([(Squares(reach=0.1), 0.6)])(big, Detection((88.0, 88.0, 136.0, 136.0), 0.4))  # (its own size: found)
    assert not ZoomCheck([(Squares(reach=0.1), 0.95)])(img, Detection((100.0, 100.0, 124.0, 124.0), 0.4))  # too unsure
    edge = frame_with([(0, 0, 24)])
    assert look(edge, Detection((0.0, 0.0, 24.0, 24.0), 0.4))  # at the frame's corner: padded, still found
    assert look.calls == 5


def test_every_look_of_the_second_look_must_find_the_face_and_the_first_miss_ends_it():
    img, box = frame_with([(100, 100, 24)]), Detection((100.0, 100.0, 124.0, 124.0), 0.4)
    first, second = Squares(reach=0.1), Squares(reach=0.1)
    assert ZoomCheck([(first, 0.6), (second, 0.6)])(img, box) and (first.calls, second.calls) == (1, 1)
    assert not ZoomCheck([(first, 0.6), (second, 0.95)])(img, box)  # the second one is not sure enough
    assert not ZoomCheck([(first, 0.95), (second, 0.6)])(img, box) and second.calls == 2  # (not asked)


def test_union_with_two_tile_levels_searches_sweeps_and_redetects_every_window_in_turn():
    calls = []
    full = Named("full", calls)
    levels = [TiledDetector(Named("tile", calls), whole=False), TiledDetector(Named("half", calls), tile=0.5, whole=False)]
    u = UnionDetector([Named("short", calls), full], levels)
    img = frame_with([])
    assert [(t.tile, w) for t, w in u.windows(img)][:4] == [(1.0, (0, 0, 360)), (1.0, (140, 0, 360)),
                                                            (1.0, (280, 0, 360)), (0.5, (0, 0, 180))]
    assert len(u.windows(img)) == 3 + 15
    ran = []  # (level, window) of every tile run
    for t in levels:
        t.detect_window = (lambda t, f: lambda image, w: ran.append((t, w)) or f(image, w))(t, t.detect_window)
    u.search(img)
    for _ in range(17):
        assert isinstance(u.sweep(img), PartialDetections)
    assert ran == u.windows(img)  # each window once, in order
    assert [c for c in calls if c[0] in ("tile", "half")] == [("tile", 360)] * 3 + [("half", 180)] * 15
    calls.clear()
    ran.clear()
    for _ in range(8):
        u.redetect(img)
    assert [c[0] for c in calls] == ["short", "full", "tile", "half"] * 2  # one model per re-detection
    tiles, halves = [w for t, w in u.windows(img) if t is levels[0]], [w for t, w in u.windows(img) if t is levels[1]]
    assert ran == [(levels[0], tiles[0]), (levels[1], halves[0]), (levels[0], tiles[1]), (levels[1], halves[1])]
    ran.clear()
    u.redetect(img, turn=4 * 16 + 3)  # round 16: the 17th half tile (of 15: the second) and the second tile
    u.redetect(img, turn=4 * 16 + 2)
    assert ran == [(levels[1], halves[16 % 15]), (levels[0], tiles[16 % 3])]


def test_the_pipeline_sweeps_the_tiles_after_a_search_so_a_small_face_beside_a_large_one_is_found_at_once():
    from stableface.pipeline import Pipeline, PipelineConfig
    from stableface.types import Frame
    from tests.test_shots import PlantedBackbone

    # a large face the whole-frame models find, and a small one only the last half tile (x 460-640,
    # y 180-360) shows: before the sweep, the small one waited for its turn among the re-detections
    img = frame_with([(100, 100, 120), (560, 280, 30)])
    levels = [TiledDetector(Squares(reach=0.3), whole=False), TiledDetector(Squares(reach=0.15), tile=0.5, whole=False)]
    u = UnionDetector([Squares(reach=0.15)], levels)
    assert len(u.windows(img)) == 18
    pipe = Pipeline(u, PlantedBackbone(), PipelineConfig(stabilizer="none", redetect_every=10, max_faces=4))
    counts = [len(pipe.update(Frame(img, i, 40.0 * i)).faces) for i in range(20)]
    assert counts == [1] * 18 + [2] * 2  # the last window runs on the 19th frame (the 11th re-detects)
    assert [f.id for f in pipe.update(Frame(img, 20, 800.0)).faces] == [0, 1]


def test_the_sweep_passes_over_windows_mostly_under_a_tracked_face_and_counts_them():
    calls = []
    levels = [TiledDetector(Named("tile", calls), whole=False), TiledDetector(Named("half", calls), tile=0.5, whole=False)]
    u = UnionDetector([Named("short", calls)], levels)
    img = frame_with([])
    wins = [w for _, w in u.windows(img)]
    u.search(img)  # window 0
    calls.clear()
    x, y, side = wins[3]  # the first half tile: under a face's crop
    face = [(x - 10, y - 10, x + side, y + side)]
    for _ in range(2):  # windows 1 and 2, tiles of the shorter side: a small share under it, run
        u.sweep(img, covered=face, limit=17)
        assert u.swept == 1
    assert calls == [("tile", 360)] * 2
    calls.clear()
    u.sweep(img, covered=face, limit=15)  # windows 3 (passed over) and 4 (run)
    assert u.swept == 2 and calls == [("half", 180)]
    calls.clear()
    assert u.sweep(img, covered=[(0, 0, 640, 360)], limit=5) == [] and u.swept == 5 and calls == []  # all under a face
    u.sweep(img, turn=3, covered=[(x, y, x + 0.7 * side, y + side)], limit=2)  # window 3, 70% under it: run
    assert u.swept == 1 and calls == [("half", 180)]
    calls.clear()
    u.sweep(img, turn=3, covered=[(x, y, x + 0.8 * side, y + side)], limit=2)  # 80%: passed over, window 4 run
    assert u.swept == 2 and calls == [("half", 180)]
    calls.clear()
    assert u.sweep(frame_with([], 60, 60), covered=[], limit=3) == [] and u.swept == 0  # no windows: none taken


def test_the_pipeline_sweep_passes_over_the_tiles_under_a_close_up_and_ends_sooner():
    from stableface.pipeline import Pipeline, PipelineConfig
    from stableface.types import Frame
    from tests.test_shots import PlantedBackbone

    img = frame_with([(250, 40, 280)])  # a close-up: its crop covers most of the frame's height
    levels = [TiledDetector(Squares(reach=0.9), whole=False), TiledDetector(Squares(reach=0.9), tile=0.5, whole=False)]
    u = UnionDetector([Squares(reach=0.15)], levels)
    ran = []
    for t in levels:
        t.detect_window = (lambda f: lambda image, w: ran.append(w) or f(image, w))(t.detect_window)
    pipe = Pipeline(u, PlantedBackbone(), PipelineConfig(stabilizer="none", redetect_every=100, max_faces=4))
    log = _spied(u, [])
    for i in range(20):
        pipe.update(Frame(img, i, 40.0 * i))
    crop = pipe.tracker.tracks[0].crop.inner()
    under = [w for _, w in u.windows(img) if detector_share(w, crop) >= COVERED]
    assert len(under) >= 4 and not set(under) & set(ran[1:])  # the search ran window 0; no window under the face ran
    assert len(ran) == 18 - len(under) and pipe._sweep == 0


def _spied(u, log):
    for name in ("search", "sweep", "redetect"):
        setattr(u, name, (lambda name, f: lambda image, *a, **k: log.append(name) or f(image, *a, **k))(name, getattr(u, name)))
    return u


def test_a_due_redetection_goes_before_the_sweep_and_no_sweep_runs_without_room_for_a_face():
    from stableface.pipeline import Pipeline, PipelineConfig
    from stableface.types import Frame
    from tests.test_shots import PlantedBackbone

    img = frame_with([(100, 100, 100)])  # (its crop covers no window by 3/4: the sweep passes none over)
    levels = [TiledDetector(Squares(reach=0.3), whole=False), TiledDetector(Squares(reach=0.15), tile=0.5, whole=False)]
    log = []
    u = _spied(UnionDetector([Squares(reach=0.15)], levels), log)
    pipe = Pipeline(u, PlantedBackbone(), PipelineConfig(stabilizer="none", redetect_every=5, max_faces=4))
    for i in range(22):
        pipe.update(Frame(img, i, 40.0 * i))
    # frame 0 searches, 1-4 sweep, 5, 10, ... re-detect (their blocks are due), the sweep resumes in between
    assert log[:12] == ["search"] + ["sweep"] * 4 + ["redetect"] + ["sweep"] * 4 + ["redetect"] + ["sweep"]
    assert log.count("sweep") == 17 and log.count("redetect") == 4 and log[-1] == "sweep"
    log.clear()
    one = Pipeline(_spied(UnionDetector([Squares(reach=0.15)], levels), log), PlantedBackbone(),
                   PipelineConfig(stabilizer="none", redetect_every=5, max_faces=1, sure_score=2.0))
    for i in range(12):
        one.update(Frame(img, i, 40.0 * i))
    assert log == ["search", "redetect", "redetect"]  # its one face found: nothing to sweep for


def test_a_part_of_a_face_found_on_the_same_frame_starts_no_track():
    from stableface.pipeline import Pipeline, PipelineConfig
    from stableface.types import Frame
    from tests.test_shots import PlantedBackbone

    img = frame_with([(100, 100, 160)])
    face, eye = Detection((100.0, 100.0, 260.0, 260.0), 0.9), Detection((120.0, 130.0, 170.0, 180.0), 0.95)
    pipe = Pipeline(UnionDetector([Fixed([eye, face])]), PlantedBackbone(),
                    PipelineConfig(stabilizer="none", redetect_every=5, max_faces=4))
    ids = [[f.id for f in pipe.update(Frame(img, i, 40.0 * i)).faces] for i in range(12)]
    assert ids == [[0]] * 12


def test_tile_detections_come_back_in_frame_coordinates_keypoints_included():
    class Corner:  # one face at tile pixels (10, 20)-(50, 60), keypoints at its corners
        def detect(self, image):
            return [Detection((10.0, 20.0, 50.0, 60.0), 0.9, np.array([[10.0, 20.0], [50.0, 60.0]], np.float32))]

    tiles = TiledDetector(Corner(), whole=False)
    d = tiles.detect_window(frame_with([]), (280, 0, 360))
    assert [x.box for x in d] == [(290.0, 20.0, 330.0, 60.0)]
    np.testing.assert_allclose(d[0].keypoints, [[290.0, 20.0], [330.0, 60.0]])


def test_a_face_across_a_tile_border_is_dropped_there_and_found_in_the_next_tile():
    img = frame_with([(480, 100, 40)])  # x 480-520 crosses x = 500, the right edge of tile 1 (140-500)
    tiles = TiledDetector(Squares(reach=0.1), whole=False)
    assert tiles.detect_window(img, (140, 0, 360)) == []
    assert [d.box for d in tiles.detect_window(img, (280, 0, 360))] == [(480.0, 100.0, 520.0, 140.0)]


def test_nearly_square_frames_get_no_tiles():
    tiles = TiledDetector(Squares(), whole=False)
    assert tiles.tiles(720, 576) == [] and tiles.tiles(640, 480) == [] and tiles.tiles(641, 640) == []
    assert len(tiles.tiles(640, 360)) == 3 and len(tiles.tiles(360, 640)) == 3  # 16:9, either way up
    assert tiles.tiles(4000, 10) == [] and tiles.tiles(120, 40) == [] and tiles.tiles(4000, 400) == []  # strips


def test_a_tile_redetection_ends_no_track_it_cannot_see():
    from stableface.detector import PartialDetections
    from stableface.pipeline import Pipeline, PipelineConfig
    from tests.test_shots import PlantedBackbone
    from stableface.types import Frame

    # a face only the full-range model and the last tile find; the short-range model finds nothing;
    # every track is unsure (sure_score above any score), so each re-detection that misses it counts
    img = np.full((360, 640, 3), 30, np.uint8)
    img[150:210, 560:620] = (200, 180, 160)
    big = Squares(reach=0.05)
    u = UnionDetector([Fixed([]), big], TiledDetector(big, whole=False))
    assert isinstance(u.redetect(img, 2), PartialDetections) and not isinstance(u.redetect(img, 1), PartialDetections)
    pipe = Pipeline(u, PlantedBackbone(), PipelineConfig(stabilizer="none", redetect_every=2, max_faces=2, sure_score=2.0))
    ids = [[f.id for f in pipe.update(Frame(img, i, 40.0 * i)).faces] for i in range(40)]
    assert ids == [[0]] * 40  # short, full, tile 0, short, full, tile 1, ...: one whole-frame miss in a row at most
@pytest.mark.parametrize("yaw", [-65.0, -30.0, 0.0, 20.0, 45.0, 80.0])
def test_yaw_of_a_planted_head_is_found(yaw):
    pts = np.zeros((68, 2))
    pts[list(pose.POINTS)] = pose.project(yaw, 320, 320)
    assert pose.yaw_degrees(pts, 320, 320) == pytest.approx(yaw, abs=0.5)


def test_face_yaw_does_not_depend_on_where_the_face_is():
    pts = np.zeros((68, 2))
    pts[list(pose.POINTS)] = pose.project(35.0, 320, 320)
    pts[[i for i in range(68) if i not in pose.POINTS]] = pts[list(pose.POINTS)].mean(0)  # inside the box
    assert pose.face_yaw(pts) == pytest.approx(pose.face_yaw(pts + [1000.0, -300.0]), abs=1e-3)
    assert abs(pose.face_yaw(pts)) > 20


def test_union_redetect_runs_one_model_in_turn_and_detect_runs_all():
    from stableface.detector import UnionDetector
    from stableface.types import Detection

    calls = []

    class Counting:
        def __init__(self, name, box):
            self.name, self.box = name, box

        def detect(self, image):
            calls.append(self.name)
            return [Detection(self.box, 0.9)]

    u = UnionDetector([Counting("short", (0, 0, 10, 10)), Counting("full", (50, 50, 60, 60))])
    img = np.zeros((64, 64, 3), np.uint8)
    assert len(u.detect(img)) == 2 and calls == ["short", "full"]
    calls.clear()
    found = [u.redetect(img)[0].box for _ in range(4)]
    assert calls == ["short", "full", "short", "full"]
    assert found == [(0, 0, 10, 10), (50, 50, 60, 60)] * 2
    u.reset()
    calls.clear()
    u.redetect(img)
    assert calls == ["short"]
