"""speech2image: say a wake word, then what you want to see."""

import os

# ONNX Runtime (1.32, wake word and moderation models) sends usage telemetry to
# mobile.events.data.microsoft.com from its first session, on Linux too. The daemon
# never reaches the network (tests/integration/test_privacy.py traces it), so it is
# off unless the user sets the variable themselves.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
