"""The one audio format every stage after the source speaks: 16 kHz mono int16, 80 ms frames.

Sources convert whatever a device or file gives into this; nothing downstream
knows about devices, rates or channel counts.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
FRAME_SAMPLES = 1280  # what openWakeWord scores at a time
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE

Frame = npt.NDArray[np.int16]
