"""The studio's library: everything ``app.py`` (layout and event wiring only) needs that is not layout.

    screen      what the screen calls each input (LABELS), the inputs' names in API order, messages naming them
    values      the widgets' values as a request, A/B changes, output file and folder names
    text        the run summary, Load settings' line, the scheduler note, the progress bar's stages
    cancel      Cancel, per caller: the flags a run checks between denoising steps
    zero_gpu    local generation, held on a ZeroGPU Space's GPU for about as long as it needs
    handlers    the events' functions: Generate, Compare, Cancel, presets, settings, uploads
    widgets     the input widgets, made from the request's FIELDS (default, range, choices, help)
    launch      start-up: arguments, the key guard, the upload script (upload.js), the REST endpoint
"""

from __future__ import annotations

import os

# Set before anything imports Gradio: no telemetry or version pings from a studio.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
