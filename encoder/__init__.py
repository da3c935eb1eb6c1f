"""Vision towers behind one interface: pixels [B, 3, H, W] in [0, 1] -> ``EncoderOutput``.

RADIO loads on transformers' native ``RadioModel`` without remote code, from a hub folder,
a hub id, a registry name or a torch.hub checkpoint; SigLIP, SigLIP2 (fixed and NaFlex),
CLIP and DINOv2 (with or without registers) load on their transformers vision models:

    >>> from encoder import build_encoder
    >>> enc = build_encoder("path/to/RADIO-H", feature_layers=[-1])
    >>> enc = build_encoder("clip-vit-l-336", feature_layers=[-2])   # LLaVA-style features
    >>> out = enc(pixel_values)          # out.summary [B, S], out.grid [B, h, w, C]
"""

from .analysis import (
    PCABasis,
    ScaleEquivariance,
    fit_pca,
    pca_image,
    scale_equivariance,
    scale_equivariance_details,
)
from .attention_projection import attention_keys, attention_projection
from .base import EncoderOutput, VisionEncoder
from .blockwise_schedule import merge_schedule
from .blockwise_tome import BlockwiseToMeOutput, blockwise_tome_forward
from .blockwise_towers import blockwise_tower_forward
from .from_config import encoder_from_config
from .hf_tower_checkpoint import load_tower
from .hf_towers import ClipTower, Dinov2Tower, HFVisionTower, Siglip2NaflexTower, SiglipTower
from .image_loading import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from .image_processing import ImageProcessor, ResolutionWarning, batch_pixels, to_rgb
from .radio import RadioEncoder
from .radio_checkpoint import load_radio
from .radio_config import radio_config_from_args
from .registry import ENCODERS, RegisteredEncoder, build_encoder, registry_names
from .tiling import TileLayout, Tiling, tile_image, tile_images, untile

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENCODERS",
    "BlockwiseToMeOutput",
    "ClipTower",
    "Dinov2Tower",
    "EncoderOutput",
    "HFVisionTower",
    "ImageLoadError",
    "ImageProcessor",
    "PCABasis",
    "RadioEncoder",
    "RegisteredEncoder",
    "ResolutionWarning",
    "ScaleEquivariance",
    "Siglip2NaflexTower",
    "SiglipTower",
    "TileLayout",
    "Tiling",
    "VisionEncoder",
    "attention_keys",
    "attention_projection",
    "batch_pixels",
    "blockwise_tome_forward",
    "blockwise_tower_forward",
    "build_encoder",
    "encoder_from_config",
    "fit_pca",
    "load_image",
    "load_radio",
    "load_tower",
    "merge_schedule",
    "pca_image",
    "radio_config_from_args",
    "registry_names",
    "scale_equivariance",
    "scale_equivariance_details",
    "tile_image",
    "tile_images",
    "to_rgb",
    "untile",
]
