"""Vision towers behind one interface (RADIO on transformers' native RadioModel, SigLIP, CLIP,
DINOv2), image processing, feature selection and analysis. Built on ``token_merge``."""
