"""Vision towers behind one interface: pixels [B, 3, H, W] in [0, 1] -> ``EncoderOutput``.

RADIO loads on transformers' native ``RadioModel`` without remote code, from a hub folder,
a hub id, a registry name or a torch.hub checkpoint:

    >>> from encoder import build_encoder
    >>> enc = build_encoder("path/to/RADIO-H", feature_layers=[-1])
    >>> out = enc(pixel_values)          # out.summary [B, S], out.grid [B, h, w, C]
"""

from .base import EncoderOutput, VisionEncoder
from .radio import RadioEncoder
from .radio_checkpoint import load_radio
from .radio_config import ARCHITECTURES, RADIO_VERSIONS, radio_config_from_args
from .registry import build_encoder

__all__ = [
    "ARCHITECTURES",
    "RADIO_VERSIONS",
    "EncoderOutput",
    "RadioEncoder",
    "VisionEncoder",
    "build_encoder",
    "load_radio",
    "radio_config_from_args",
]
