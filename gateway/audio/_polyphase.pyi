"""Types of the C extension ``_polyphase.c`` (built when a compiler is there; see setup.py)."""

import numpy as np
import numpy.typing as npt

def process(
    buf: npt.NDArray[np.float64],
    held: int,
    pcm: bytes,
    taps: npt.NDArray[np.float64],
    window: int,
    up: int,
    down: int,
    /,
) -> tuple[bytes, int]: ...
