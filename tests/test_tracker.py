"""The tracker driven frame by frame with planted detections and landmarks (no models)."""

import numpy as np
import pytest

from stableface.crop import CropBox
from stableface.tracker import DeadBand, Tracker, crop_from_detection, iou
from stableface.types import Detection


class Counting:
    """A stabilizer that only counts updates and resets; one per track."""

    made = 0

    def __init__(self):
        Counting.made += 1
        self.resets = 0

    def update(self, heatmaps, crop, timestamp_ms):
        raise AssertionError("not used here")

    def reset(self):
        self.resets += 1


def face_points(x0, y0, side):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, size=(68, 2)) * side + [x0, y0]
    pts[36], pts[45] = [x0 + 0.2 * side, y0 + 0.4 * side], [x0 + 0.8 * side, y0 + 0.4 * side]
    pts[0], pts[16] = [x0, y0], [x0 + side, y0 + side]
    return pts


def det(x0, y0, side, score=0.9):
    return Detection((x0, y0, x0 + side, y0 + side), score)


def test_iou_planted():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_ids_stable_while_face_stays_and_new_face_gets_next_id():
    tr = Tracker(Counting, max_faces=2)
    fresh = tr.associate([det(100, 100, 80)])
    assert len(fresh) == 1
    a = tr.start(fresh[0])
    assert a.id == 0
    for step in range(5):  # the face drifts slowly; re-detections confirm it
        assert tr.observe(a, face_points(100 + step, 100, 80), np.full(68, 0.8))
        assert tr.associate([det(100 + step, 100, 80)]) == []
        assert [t.id for t in tr.tracks] == [0] and a.misses == 0
    # a second person appears far away
    fresh = tr.associate([det(101, 100, 80), det(400, 300, 60)])
    assert [d.box[0] for d in fresh] == [400]
    b = tr.start(fresh[0])
    assert b.id == 1 and [t.id for t in tr.tracks] == [0, 1]
    assert a.age == 5 and b.age == 0


def test_a_detection_that_is_part_of_a_tracked_face_starts_no_track():
    tr = Tracker(Counting, max_faces=4)
    a = tr.start(tr.associate([det(100, 100, 200)])[0])
    assert tr.observe(a, face_points(100, 100, 200), np.full(68, 0.8))
    # an eye a small tile showed as a face (centre inside, a fifth of the side), and a small face beside it
    fresh = tr.associate([det(140, 160, 40), det(320, 100, 40)], misses=False)
    assert [d.box[0] for d in fresh] == [320]
    assert tr.associate([det(230, 230, 110)]) != []  # centre inside, IoU 0.10, but over half the face's side: a face of its own


def test_max_faces_caps_new_tracks():
    tr = Tracker(Counting, max_faces=1)
    fresh = tr.associate([det(0, 0, 50), det(200, 200, 50)])
    assert len(fresh) == 1


def test_unconfirmed_track_expires_and_its_state_is_reset():
    tr = Tracker(Counting, max_faces=1, max_misses=2)
    t = tr.start(det(100, 100, 80))
    tr.observe(t, face_points(100, 100, 80), np.full(68, 0.8))
    assert tr.associate([]) == [] and t.misses == 1 and tr.tracks == [t]
    assert tr.associate([]) == [] and tr.tracks == []
    assert t.stabilizer.resets == 1
    # the next face gets a new id: ids are never reused while the tracker lives
    n = tr.start(det(100, 100, 80))
    assert n.id == 1


def test_detections_of_part_of_the_frame_count_no_miss():
    tr = Tracker(Counting, max_faces=2, max_misses=2)
    t = tr.start(det(100, 100, 80))
    tr.observe(t, face_points(100, 100, 80), np.full(68, 0.8))
    assert tr.associate([]) == [] and t.misses == 1
    for _ in range(3):  # a tile that does not show the face: no miss, and a new face there still starts
        assert tr.associate([], misses=False) == [] and t.misses == 1 and tr.tracks == [t]
    assert len(tr.associate([det(400, 100, 60)], misses=False)) == 1
    assert tr.associate([]) == [] and tr.tracks == []


def test_low_confidence_ends_track():
    tr = Tracker(Counting, min_score=0.3)
    t = tr.start(det(10, 10, 50))
    assert not tr.observe(t, face_points(10, 10, 50), np.full(68, 0.1))
    assert tr.tracks == [] and t.stabilizer.resets == 1


def test_each_track_gets_its_own_stabilizer_and_reset_equals_fresh():
    Counting.made = 0
    tr = Tracker(Counting, max_faces=3)
    t1, t2 = tr.start(det(0, 0, 50)), tr.start(det(300, 0, 50))
    assert t1.stabilizer is not t2.stabilizer and Counting.made == 2
    tr.reset()
    assert tr.tracks == [] and t1.stabilizer.resets == 1 and t2.stabilizer.resets == 1
    assert tr.start(det(0, 0, 50)).id == 0


def test_duplicate_tracks_on_one_face_merge_into_the_older():
    tr = Tracker(Counting, max_faces=2)
    a, b = tr.start(det(100, 100, 80)), tr.start(det(300, 100, 80))
    tr.observe(a, face_points(100, 100, 80), np.full(68, 0.9))
    tr.observe(a, face_points(100, 100, 80), np.full(68, 0.9))
    tr.observe(b, face_points(102, 100, 80), np.full(68, 0.9))  # b slid onto a's face
    assert [t.id for t in tr.tracks] == [0]


def test_dead_band_holds_the_crop_still_for_small_moves():
    band = DeadBand(shift=0.05, scale=0.08, angle_deg=5)
    cur = CropBox(100, 100, 100, 0.0)
    assert band.follow(cur, CropBox(103, 102, 104, 0.02)) is cur
    moved = CropBox(108, 100, 100, 0.0)
    assert band.follow(cur, moved) is moved
    assert band.follow(cur, CropBox(100, 100, 110, 0.0)).side == 110
    assert band.follow(None, moved) is moved


def test_detection_crop_calibration():
    c = crop_from_detection(det(100, 200, 100))
    assert c.cx == 150 and c.cy == pytest.approx(256.0) and c.side == pytest.approx(126.0)


def test_track_box_follows_new_landmarks_and_is_cached():
    import numpy as np

    from stableface.crop import CropBox
    from stableface.tracker import Track

    t = Track(0, None, CropBox(50, 50, 100))
    assert t.box == CropBox(50, 50, 100).bounds()
    t.landmarks = np.array([[10.0, 20.0], [30.0, 60.0]])
    assert t.box == (10.0, 20.0, 30.0, 60.0)
    assert t.box is t.box  # computed once per landmarks array
    t.landmarks = t.landmarks + 5
    assert t.box == (15.0, 25.0, 35.0, 65.0)
