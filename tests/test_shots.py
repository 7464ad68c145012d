"""Shot cuts: the frame-level test on planted sequences, and the pipeline at a cut (planted models).

The pipeline tests use a planted world: a black frame with one or more coloured squares
("faces"); the detector finds squares (plus planted false positives), and the backbone puts a
fixed 68-point template on the square it sees in its crop, with sure heatmaps (peak 1), or
weak ones (peak 0.1) where there is none.
"""

import threading

import numpy as np
import pytest

from stableface import codec
from stableface.crop import to_crop
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.shots import ShotDetector, frame_features, landmark_jump, landmarks_changed, thumbnail
from stableface.tracker import Tracker
from stableface.types import Detection, Frame, FrameResult

from .conftest import shared_video
from .media import astronauts

SIDE = 256


def texture(seed, colour, size=SIDE):
    """A smooth random texture (blurred noise) tinted with ``colour`` (BGR), uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 1, (size, size)).astype(np.float32), (0, 0), size / 40)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return np.clip(noise[..., None] * np.array(colour, np.float32) + 20, 0, 255).astype(np.uint8)


def colourful(seed, hue, size=2 * SIDE):
    """A smooth random texture whose hues (OpenCV's 0-180) spread over ``hue`` = (lo, hi), like a real scene."""
    import cv2

    rng = np.random.default_rng(seed)

    def field(scale):
        f = cv2.GaussianBlur(rng.uniform(0, 1, (size, size)).astype(np.float32), (0, 0), size / scale)
        return (f - f.min()) / (f.max() - f.min())

    hsv = np.stack([hue[0] + (hue[1] - hue[0]) * field(30), 80 + 150 * field(20), 60 + 180 * field(40)], -1)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def moving(base, n, dx=1, dy=0, noise=2.0, seed=0):
    """``n`` frames of a window over ``base`` moving (dx, dy) pixels per frame, with sensor noise."""
    rng = np.random.default_rng(seed)
    side = SIDE
    out = []
    for i in range(n):
        x, y = i * dx, i * dy
        f = base[y:y + side, x:x + side].astype(np.float32) + rng.normal(0, noise, (side, side, 3))
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


def stage(background, people, noise=3.0):
    """Frames of a static ``background`` (H, W, 3) with, per frame, ``people[i]`` = [(tile, x)] standing at
    the bottom edge at column x (cut off by the frame's sides), and sensor noise."""
    h, w = background.shape[:2]
    out = []
    for i, placed in enumerate(people):
        img = background.astype(np.float32)
        for tile, x in placed:
            x0, x1 = max(x, 0), min(x + tile.shape[1], w)
            img[h - tile.shape[0]:, x0:x1] = tile[:, x0 - x:x1 - x]
        out.append(np.clip(img + np.random.default_rng(i).normal(0, noise, img.shape), 0, 255).astype(np.uint8))
    return out


def backgrounds():
    """A flat grey and a textured 480 x 360 background."""
    return {"grey": np.full((360, 480, 3), 70, np.uint8), "textured": texture(11, (120, 160, 200), 480)[:360]}


def cuts_of(frames, detector=None, confirm=None):
    det = detector or ShotDetector()
    return [i for i, f in enumerate(frames) if det.update(f, confirm)]


# -- the frame-level test -----------------------------------------------------------------------------------


def test_thumbnail_shape_and_cost_is_small():
    img = texture(0, (200, 120, 60), 512)
    th = thumbnail(img)
    assert th.shape == (32, 32, 3) and th.dtype == np.float32
    assert abs(float(th.mean()) - float(img.mean())) < 2.0  # a shrink, not a crop


def test_two_different_clips_spliced_at_17_give_one_cut_at_17():
    a = moving(texture(1, (60, 140, 230), 2 * SIDE), 17, dx=2)
    b = moving(texture(2, (230, 90, 40), 2 * SIDE), 23, dx=1, dy=1, seed=1)
    assert cuts_of(a + b) == [17]


def test_a_still_clip_and_a_slow_pan_give_no_cut():
    still = moving(texture(3, (150, 150, 150), 2 * SIDE), 60, dx=0, noise=3.0)
    assert cuts_of(still) == []
    pan = moving(texture(4, (90, 200, 120), 3 * SIDE), 100, dx=3, dy=1)
    assert cuts_of(pan) == []


def test_a_pan_that_starts_suddenly_is_not_a_cut():
    base = texture(5, (120, 80, 200), 3 * SIDE)
    frames = moving(base, 20, dx=0) + [f for f in moving(base, 60, dx=6)[1:]]  # still, then 6 px a frame
    assert cuts_of(frames) == []


@pytest.mark.parametrize("background", ["grey", "textured"])
def test_a_face_that_starts_to_move_after_standing_still_is_not_a_cut(background):
    # the astronaut stands still for 50 frames, then walks right at 12 px a frame: at the first step the
    # frames 1 and 2 back are the same (d2 ~ d1, like a cut), and the recent motion is nil
    a, _ = astronauts()
    frames = stage(backgrounds()[background], [[(a, 140 + 12 * max(0, i - 49))] for i in range(75)])
    assert cuts_of(frames) == []
    # the face's landmarks jump with it (12 px is 0.16 of its landmark box): a landmark confirmation
    # that says yes does not make it a cut either
    assert cuts_of(frames, confirm=lambda: True) == []
    det = ShotDetector()
    for f in frames[:51]:
        det.update(f)
    assert det.score >= det.hard  # as sudden as a cut on d1 and d2 alone ...
    assert det.spread < det.min_spread  # ... but a local change: the next frame decides


@pytest.mark.parametrize("background", ["grey", "textured"])
def test_a_cut_that_changes_only_the_person_is_found_by_the_next_frame(background):
    import cv2

    a, b = astronauts()
    for confirm in (None, lambda: True):
        # a jump cut: the same person 60 px to the right, on the same background; frame 30 changes as
        # little of the picture as a motion onset, and the next one shows it was no motion
        frames = stage(backgrounds()[background], [[(a, 140)]] * 30 + [[(a, 200)]] * 20)
        det = ShotDetector()
        assert [(i, det.kind) for i, f in enumerate(frames) if det.update(f, confirm)] == [(31, "late")]
        # another person of the same size in the same place: one cut (on the colours or one frame late)
        frames = stage(backgrounds()[background], [[(a, 140)]] * 30 + [[(cv2.resize(b, a.shape[1::-1]), 140)]] * 20)
        assert len(cuts_of(frames, confirm=confirm)) == 1 and cuts_of(frames, confirm=confirm)[0] in (30, 31)


def test_a_dissolve_is_one_gradual_cut_inside_it():
    a = moving(colourful(6, (0, 40)), 30, dx=1)  # reds and oranges
    b = moving(colourful(7, (90, 130)), 30, dx=1, seed=2)  # blues
    n = 10
    mix = [np.round((1 - (k + 1) / (n + 1)) * a[20 + k].astype(np.float32)
                    + (k + 1) / (n + 1) * b[k].astype(np.float32)).astype(np.uint8) for k in range(n)]
    det = ShotDetector()
    kinds = {i: det.kind for i, f in enumerate(a[:20] + mix + b[n:]) if det.update(f)}
    assert len(kinds) == 1 and list(kinds.values()) == ["gradual"]
    assert 20 <= next(iter(kinds)) < 20 + n  # part-way into the dissolve


def test_an_exposure_ramp_is_not_a_cut():
    base = moving(texture(9, (90, 150, 210), 2 * SIDE), 40, dx=1)
    gain = [0.6 if i < 15 else min(1.0, 0.6 + 0.04 * (i - 15)) for i in range(40)]  # 10 frames of auto exposure
    frames = [np.clip(f.astype(np.float32) * g, 0, 255).astype(np.uint8) for f, g in zip(base, gain)]
    assert cuts_of(frames) == []


def test_a_small_jump_is_confirmed_by_the_next_frame():
    base = texture(10, (120, 170, 90), 2 * SIDE)
    def jump(shift):  # a still picture that jumps sideways at frame 20 and stays
        return moving(base, 20, dx=0, noise=1.0) + [f[:, shift:shift + SIDE] for f in
                                                    moving(base[:, :SIDE + shift], 10, dx=0, noise=1.0, seed=3)]

    det = ShotDetector(min_change=np.inf)  # never a cut on the frame's own evidence
    assert [(i, det.kind) for i, f in enumerate(jump(16)) if det.update(f)] == [(21, "late")]
    assert cuts_of(jump(16)) in ([20], [21])  # with the defaults: at the jump, or one frame late
    assert cuts_of(jump(6)) == []  # too small a change (a caption popping up): not a cut


def test_a_one_frame_flash_is_one_cut_at_the_flash():
    a = moving(texture(8, (100, 160, 90), 2 * SIDE), 30, dx=1)
    frames = a[:12] + [np.full_like(a[0], 250)] + a[13:]
    assert cuts_of(frames) == [12]


def test_candidates_ask_confirm_and_it_decides():
    a = moving(texture(1, (60, 140, 230), 2 * SIDE), 17, dx=2)
    b = moving(texture(2, (230, 90, 40), 2 * SIDE), 23, dx=1, seed=1)
    asked = []

    def confirm(answer):
        def f():
            asked.append(answer)
            return answer
        return f

    def candidates_only():  # the hard threshold out of reach, and no late or gradual cuts
        return ShotDetector(hard=np.inf, late_score=np.inf, gradual=np.inf)

    assert cuts_of(a + b, candidates_only(), confirm(True)) == [17] and asked == [True]
    assert cuts_of(a + b, candidates_only(), confirm(False)) == [] and asked == [True, False]
    assert cuts_of(a + b, candidates_only()) == []  # no track, no confirmation: not a cut
    # a candidate that the landmarks turn down is still found one frame late
    det = ShotDetector(hard=np.inf, gradual=np.inf)
    assert [(i, det.kind) for i, f in enumerate(a + b) if det.update(f, confirm(False))] == [(18, "late")]
    with pytest.raises(ValueError, match="must not exceed"):
        ShotDetector(hard=0.1, soft=0.5)


def test_reset_equals_fresh():
    a = moving(texture(1, (60, 140, 230), 2 * SIDE), 17, dx=2)
    b = moving(texture(2, (230, 90, 40), 2 * SIDE), 23, dx=1, seed=1)
    det = ShotDetector()
    assert cuts_of(a + b, det) == [17]
    det.reset()
    assert not det.update(b[0])  # the first frame after a reset has nothing before it
    det.reset()
    assert cuts_of(a + b, det) == [17]


def test_landmark_evidence():
    pts = np.stack(np.meshgrid(np.linspace(0, 100, 8), np.linspace(0, 100, 9)), -1).reshape(-1, 2)[:68]
    s = np.full(68, 0.9)
    assert landmark_jump(pts, pts + [3.0, 4.0]) == pytest.approx(0.05)
    assert not landmarks_changed(pts, s, pts + [1.0, 0.0], s)
    assert landmarks_changed(pts, s, pts + [10.0, 0.0], s)  # moved a tenth of the face
    assert landmarks_changed(pts, s, pts, s - 0.3)  # sure points became guesses
    assert landmark_jump(pts, pts * np.nan) == np.inf


def test_real_clips_spliced_at_17_give_one_cut_at_17():
    import cv2

    def frames(name, first, n):
        cap = cv2.VideoCapture(str(shared_video(name)))
        cap.set(cv2.CAP_PROP_POS_FRAMES, first)
        return [cap.read()[1] for _ in range(n)]

    a, b = frames("WDA_KatieHill_000.mp4", 0, 17), frames("WDA_BobMenendez_000.mp4", 50, 20)
    assert cuts_of(a + b) == [17]
    assert cuts_of(frames("WDA_KatieHill_000.mp4", 0, 60)) == []


# -- the pipeline at a cut (planted models) -----------------------------------------------------------------

K = 68
TEMPLATE = np.stack(np.meshgrid(np.linspace(0.1, 0.9, 9), np.linspace(0.15, 0.9, 8)), -1).reshape(-1, 2)[:K].copy()
TEMPLATE[36], TEMPLATE[45] = [0.3, 0.4], [0.7, 0.4]  # level eyes: upright crops


def squares(image):
    """Bounding boxes (x0, y0, x1, y1) of the bright blobs of a planted frame."""
    import cv2

    mask = (image.max(axis=2) > 60).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    return [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h, area in stats[1:n] if area > 100]


class PlantedDetector:
    """Finds the squares; ``false[i]`` are extra boxes (false positives) for the i-th call."""

    def __init__(self, false=None):
        self.false, self.calls = false or {}, 0

    def detect(self, image):
        boxes = self.false.get(self.calls, []) + squares(image)
        self.calls += 1
        return [Detection(b, 0.9) for b in boxes]


class PlantedBackbone:
    size, stride, crop_scale, k, heatmap_size, scheme, path = 64, 4.0, 1.3, K, 16, "ibug68", "planted"

    def __call__(self, crops):
        out = []
        for crop in crops:
            found = squares(crop)
            if found:
                x0, y0, x1, y1 = max(found, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
                pts = np.array([x0, y0]) + TEMPLATE * [x1 - x0, y1 - y0]
                out.append(codec.encode(pts, (16, 16), self.stride))
            else:
                out.append(0.1 * codec.encode(np.full((K, 2), 32.0), (16, 16), self.stride))
        return np.stack(out)


def world(faces, background=0):
    """A planted frame: ``faces`` are (x0, y0, side, (b, g, r)) squares on a grey ``background``."""
    img = np.full((SIDE, SIDE, 3), background, np.uint8)
    for x0, y0, side, colour in faces:
        img[y0:y0 + side, x0:x0 + side] = colour
    return img


def planted_pipeline(false=None, **cfg):
    cfg = {"stabilizer": "none", "redetect_every": 5, "max_faces": 2} | cfg
    return Pipeline(PlantedDetector(false), PlantedBackbone(), PipelineConfig(**cfg))


def frames_of(images):
    return [Frame(img, i, i * 40.0) for i, img in enumerate(images)]


def first_point(result):
    return result.faces[0].landmarks[0]


def test_a_cut_ends_every_track_and_the_new_face_gets_a_new_id_and_shot_1():
    # a person in the left half, then (a cut to another scene) someone else at almost the same place
    before = [world([(60, 60, 80, (200, 180, 160))], background=30)] * 10
    after = [world([(64, 60, 80, (90, 200, 230))], background=40)] * 10
    pipe = planted_pipeline()
    resets = []
    make = pipe.new_stabilizer

    def counted():
        s = make()
        s.reset = lambda: resets.append(len(resets))
        return s

    pipe.tracker.factory = counted
    results = [pipe.update(f) for f in frames_of(before + after)]
    assert [r.shot for r in results] == [0] * 10 + [1] * 10
    assert [[f.id for f in r.faces] for r in results] == [[0]] * 10 + [[1]] * 10  # from the cut frame on
    assert len(resets) == 1  # the first track ended at the cut
    assert first_point(results[10])[0] == pytest.approx(64 + 0.1 * 80, abs=0.5)  # detected on the cut frame
    # the control: the same frames without cut detection keep id 0 on the other person
    pipe = planted_pipeline(shot_cuts=False)
    results = [pipe.update(f) for f in frames_of(before + after)]
    assert {f.id for r in results for f in r.faces} == {0} and {r.shot for r in results} == {0}


def test_the_lookahead_window_stops_at_a_cut():
    before = [world([(60, 60, 80, (200, 180, 160))], background=30)] * 10
    after = [world([(80, 70, 80, (90, 200, 230))], background=40)] * 10  # 20 px right, 10 down
    pipe = planted_pipeline(lookahead=4)
    out = [r for _, r in pipe.stream(frames_of(before + after))]
    assert [r.frame for r in out] == list(range(20)) and [r.shot for r in out] == [0] * 10 + [1] * 10
    assert [f.id for r in out for f in r.faces] == [0] * 10 + [1] * 10
    # still faces keep their place exactly: nothing of the other shot leaks into the window
    assert np.array_equal(out[9].faces[0].landmarks, out[0].faces[0].landmarks)
    assert np.array_equal(out[10].faces[0].landmarks, out[19].faces[0].landmarks)
    # the control: without cut detection the track follows the other person and the window mixes them
    pipe = planted_pipeline(lookahead=4, shot_cuts=False)
    out = [r for _, r in pipe.stream(frames_of(before + after))]
    assert [f.id for r in out for f in r.faces] == [0] * 20
    assert not np.allclose(out[9].faces[0].landmarks, out[0].faces[0].landmarks, atol=0.5)


def test_a_false_start_consumes_no_id():
    face = world([(100, 100, 60, (200, 200, 200))])
    # call 0: a false positive on black, no face; call 1: the real face
    pipe = planted_pipeline(false={0: [(10.0, 10.0, 50.0, 50.0)]})
    results = [pipe.update(f) for f in frames_of([world([]), face, face])]
    assert [[f.id for f in r.faces] for r in results] == [[], [0], [0]]
    # a false positive listed before two real faces in the same frame: they are 0 and 1
    two = world([(100, 100, 60, (200, 200, 200)), (20, 180, 50, (90, 200, 90))])
    pipe = planted_pipeline(false={0: [(10.0, 10.0, 50.0, 50.0)]}, max_faces=3)
    results = [pipe.update(f) for f in frames_of([two] * 3)]
    assert [[f.id for f in r.faces] for r in results] == [[0, 1]] * 3
    assert results[0].faces[0].landmarks[0][0] == pytest.approx(100 + 0.1 * 60, abs=0.5)  # 0 is the first found


def test_tracker_gives_back_the_id_of_a_track_never_shown():
    tr = Tracker(lambda: type("S", (), {"reset": lambda self: None})(), max_faces=3)
    a, b = tr.start(Detection((0, 0, 50, 50), 0.9)), tr.start(Detection((200, 0, 250, 50), 0.9))
    assert (a.id, b.id) == (0, 1)
    tr.end(a)  # never observed: its id goes back, and the younger unconfirmed track moves down
    assert b.id == 0 and tr.next_id == 1
    pts = np.stack(np.meshgrid(np.linspace(200, 250, 9), np.linspace(0, 50, 8)), -1).reshape(-1, 2)[:K]
    assert tr.observe(b, pts, np.full(K, 0.9)) and b.confirmed
    c = tr.start(Detection((0, 200, 50, 250), 0.9))
    assert c.id == 1
    tr.end(b)  # shown: its id stays used
    assert tr.start(Detection((0, 0, 50, 50), 0.9)).id == 2 and c.id == 1


def test_frame_result_shot_field():
    assert FrameResult(0, 0.0).shot == 0 and FrameResult(0, 0.0).to_dict()["shot"] == 0
    assert FrameResult(3, 120.0, (), 2).to_dict() == {"frame": 3, "timestamp_ms": 120.0, "shot": 2, "faces": []}
    with pytest.raises(ValueError, match="shot"):
        FrameResult(0, 0.0, (), -1)


def test_crop_helper_used_by_the_planted_backbone_is_consistent():
    # the planted backbone reads squares in crop pixels: a square seen through a crop lands where to_crop says
    from stableface.crop import CropBox, warp

    img = world([(100, 100, 60, (200, 200, 200))])
    box = CropBox(130, 130, 100, 0.0)
    (x0, y0, _, _), = squares(warp(img, box, 64))
    assert to_crop(np.array([[100.0, 100.0]]), box, 64)[0] == pytest.approx([x0, y0], abs=1.0)


def test_the_reader_thread_computes_the_shot_features_and_the_cuts_stay_the_same():
    before = [world([(60, 60, 80, (200, 180, 160))], background=30)] * 10
    after = [world([(64, 60, 80, (90, 200, 230))], background=40)] * 10
    frames = frames_of(before + after)

    def run(overlap, frames):
        pipe = planted_pipeline()
        given, update = [], pipe.shots.update

        def spy(image, confirm=None, features=None):
            if features is not None:  # the features handed over are this very image's
                own = frame_features(image)
                assert np.array_equal(features[0], own[0]) and np.array_equal(features[1], own[1])
            given.append((features is not None, threading.current_thread() is threading.main_thread()))
            return update(image, confirm, features)

        pipe.shots.update = spy
        return [r.shot for r in pipe.track(frames, overlap=overlap)], given

    shots, given = run(True, frames)
    assert shots == [0] * 10 + [1] * 10
    assert given == [(True, True)] * 20  # every frame's features came from the reader thread, none recomputed
    serial, given = run(False, frames)
    assert serial == shots and given == [(False, True)] * 20
    # an iterable that repeats an index with another image: that frame's features are its own
    repeated = frames[:10] + [Frame(after[0], 9, 390.0)] + frames[11:]
    shots, given = run(True, repeated)  # (the spy fails if a frame is handed another image's features)
    assert shots == [0] * 10 + [1] * 10


class CountingBackbone(PlantedBackbone):
    def __init__(self):
        self.calls = []

    def __call__(self, crops):
        self.calls.append(len(crops))
        return super().__call__(crops)


@pytest.mark.parametrize("shift, tracked", [(0.0, True), (100.0, False)])
def test_a_face_whose_centre_is_past_the_frame_edge_is_not_started_every_frame(shift, tracked):
    # the decoder places the landmarks `shift` px left of the square at x 20-100: their centre at -40
    backbone = CountingBackbone()
    pipe = Pipeline(PlantedDetector(), backbone, PipelineConfig(stabilizer="none", redetect_every=5, max_faces=1))
    decode, made, make = pipe.decoder, [], pipe.new_stabilizer

    def shifted(h, crop):
        pts, scores = decode(h, crop)
        return pts - [shift, 0.0], scores

    pipe.decoder = shifted
    pipe.tracker.factory = lambda: made.append(1) or make()
    results = [pipe.update(f) for f in frames_of([world([(20, 60, 80, (200, 180, 160))], background=30)] * 10)]
    if tracked:
        assert all(len(r.faces) == 1 for r in results) and len(made) == 1
    else:  # searched on every frame: one backbone pass for the detection, no second pass, no stabilizer step
        assert all(not r.faces for r in results) and backbone.calls == [1] * 10 and pipe.tracker.tracks == []


@pytest.mark.parametrize("step", [1, 3, 0])
def test_redetections_are_counted_in_frames_processed_not_in_frame_indices(step):
    # a live source's indices skip the frames it dropped; an API caller may give any increasing index
    detector = PlantedDetector()
    pipe = Pipeline(detector, PlantedBackbone(), PipelineConfig(stabilizer="none", redetect_every=10, max_faces=2))
    image = world([(60, 60, 80, (200, 180, 160))], background=30)
    for i in range(60):
        pipe.update(Frame(image, i * step, i * 40.0))
    assert detector.calls == 6  # frame 0 (searching), then once every 10 frames processed


def _faded(img, alpha):
    return np.clip(img.astype(np.float32) * alpha, 0, 255).astype(np.uint8)


def _scene(background, faces):
    """A planted frame on a coloured ``background`` (b, g, r): ``faces`` are (x0, y0, side, (b, g, r)) squares."""
    img = np.empty((SIDE, SIDE, 3), np.uint8)
    img[:] = background
    for x0, y0, side, colour in faces:
        img[y0:y0 + side, x0:x0 + side] = colour
    return img


def _two_people():
    """A person on blue and another on amber (two shots of different colours)."""
    return (_scene((40, 8, 4), [(40, 60, 40, (220, 90, 40))]), _scene((4, 30, 40), [(150, 90, 40, (40, 210, 230))]))


def _fade_through_black(a, b, steps, black):
    return [_faded(a, 1 - (k + 1) / steps) for k in range(steps)] + [_scene((0, 0, 0), [])] * black \
        + [_faded(b, (k + 1) / steps) for k in range(steps)]


def test_a_fade_through_black_gives_the_incoming_person_one_new_id_from_the_cut_on():
    # a person on blue, a 6-step fade to black, 3 black frames, then another person on amber fading in: the
    # detector finds the second face on a frame still too dark for colours (frame 30), and the cut comes on
    # the next one, when the colours return (a gradual cut); a track started on the dark frame would be
    # ended there, and its person given a second id
    a, b = _two_people()
    images = [a] * 20 + _fade_through_black(a, b, 6, 3) + [b] * 12
    assert squares(images[30]) and frame_features(images[30])[1] is None  # (the planted case holds)

    def run(wait=True):
        pipe = planted_pipeline()
        if not wait:  # the control: the pipeline as if it never waited
            update = pipe.shots.update

            def never_waiting(*args, **kw):
                out = update(*args, **kw)
                pipe.shots.waiting = False
                return out

            pipe.shots.update = never_waiting
        results = [pipe.update(f) for f in frames_of(images)]
        return [[f.id for f in r.faces] for r in results], [r.shot for r in results], pipe

    ids, shots, pipe = run()
    first = next(k for k, r in enumerate(ids) if r == [1])
    assert first == 31 and frame_features(images[31])[1] is not None  # the first frame with colours again ...
    assert all(r in ([0], []) for r in ids[:first]) and ids[first:] == [[1]] * (len(ids) - first)
    assert shots == [0] * first + [1] * (len(ids) - first)  # ... is the cut's, and the second person is 1 from there
    ids, _, _ = run(wait=False)
    assert ids[30:32] == [[1], [2]]  # the control: found on the dark frame, ended by the cut, found again


def test_a_long_black_forgets_the_shot_before_and_gives_the_incoming_person_one_id():
    # more dark frames in a row than DARK_FRAMES: the colours of the shot before are forgotten (no cut), so
    # faces start on the dark frames of the fade-in, and the colours coming back end nothing
    from stableface.shots import DARK_FRAMES

    a, b = _two_people()
    images = [a] * 20 + _fade_through_black(a, b, 6, DARK_FRAMES + 5) + [b] * 12
    pipe = planted_pipeline()
    results = [pipe.update(f) for f in frames_of(images)]
    ids = [[f.id for f in r.faces] for r in results]
    assert {i for r in ids for i in r} == {0, 1} and ids[-12:] == [[1]] * 12
    first = next(k for k, r in enumerate(ids) if r == [1])
    assert frame_features(images[first])[1] is None  # found on a dark frame of the fade-in, and kept
    assert len({r.shot for r in results if any(f.id == 1 for f in r.faces)}) == 1  # (no cut under it)


def test_dark_frames_wait_for_colours_a_bounded_time_and_a_dim_scene_is_never_cut():
    from stableface.shots import DARK_FRAMES, GRADUAL_FRAMES

    bright = world([(40, 60, 100, (220, 90, 40))], background=20)
    dim = _faded(bright, 0.3)
    ramp = [_faded(bright, a) for a in (0.9, 0.8, 0.7, 0.6, 0.5)]
    assert frame_features(dim)[1] is None and frame_features(_faded(bright, 0.5))[1] is not None
    # the light dims: the dark frames wait (no track starts) DARK_FRAMES - 1 frames, then faces start again
    det = ShotDetector()
    kinds, waiting = [], []
    for f in [bright] * 15 + ramp + [dim] * 20:
        det.update(f)
        kinds.append(det.kind)
        waiting.append(det.waiting)
    assert not any(kinds)  # no cut
    assert [k for k, w in enumerate(waiting) if w] == list(range(20, 20 + DARK_FRAMES - 1))
    # a scene whose brightness hovers around the line: never a cut, and its person keeps one id
    hovering = [bright] * 15 + ([_faded(bright, 0.5)] + [dim] * DARK_FRAMES) * 4
    pipe = planted_pipeline()
    results = [pipe.update(f) for f in frames_of(hovering)]
    assert {r.shot for r in results} == {0} and all([f.id for f in r.faces] == [0] for r in results)
    # a shot dark from its start has no colours to wait for, nor does one too short for its colours to be
    # compared (fewer frames with colours than GRADUAL_FRAMES)
    for frames in ([dim] * 15, [bright] * (GRADUAL_FRAMES - 1 - len(ramp)) + ramp + [dim] * 15):
        det = ShotDetector()
        for f in frames:
            det.update(f)
            assert not det.waiting and det.kind is None
