from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
VIDEOS = SHARED / "videos"
DATA = SHARED / "data" / "300w_train"

# A suite started in the background (`cmd &` in a script, nohup) inherits SIGINT ignored, and so
# would every stableface process it starts, which then never sees the Ctrl-C the tests send.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_video(name: str = "WDA_KatieHill_000.mp4") -> Path:
    p = VIDEOS / name
    if not p.exists():
        pytest.skip(f"shared clip {p} not available")
    return p


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
