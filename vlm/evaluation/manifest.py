"""The lmms-eval registration: the payload of the ``lmms_eval.models`` entry point.

lmms-eval imports this module while ``lmms_eval.models`` initialises, and only logs a warning
when that fails, so it imports nothing heavy and nothing from ``lmms_eval.models`` itself.
"""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

MODEL_ID = "radio_vlm"

MANIFEST = ModelManifest(
    model_id=MODEL_ID,
    simple_class_path="vlm.evaluation.model.RadioVLM",
    aliases=("radio-vlm",),
)
