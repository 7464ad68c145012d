"""stableface: stable facial landmarks for videos and webcams.

    from stableface import Pipeline
    pipe = Pipeline.from_weights()
    for result in pipe.track("clip.mp4"):
        print(result.frame, [f.landmarks[30] for f in result.faces])
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Pipeline", "PipelineConfig", "Face", "FrameResult", "Frame", "__version__"]

_LAZY = {"Pipeline": "stableface.pipeline", "PipelineConfig": "stableface.pipeline", "Face": "stableface.types",
         "FrameResult": "stableface.types", "Frame": "stableface.types"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stableface' has no attribute {name!r}")
