"""Track a video with the Python API and print how much the nose tip moves, raw vs stabilized.

    python examples/track_video.py ../shared/videos/WDA_KatieHill_000.mp4
"""

from __future__ import annotations

import sys

import numpy as np

from stableface import Pipeline, PipelineConfig


def nose_track(path: str, stabilizer: str) -> np.ndarray:
    pipe = Pipeline.from_weights(config=PipelineConfig(stabilizer=stabilizer))
    points = [r.faces[0].landmarks[30] for r in pipe.track(path) if r.faces]  # iBUG 30: nose tip
    return np.array(points)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "clip.mp4"
    for kind in ("none", "convlstm"):
        nose = nose_track(path, kind)
        step = np.linalg.norm(np.diff(nose, axis=0), axis=1)
        print(f"{kind:9s} {len(nose)} frames, nose tip moves {step.mean():.2f} px/frame on average")


if __name__ == "__main__":
    main()
