"""The vision-language model: encoder -> token merger -> projector -> any Hugging Face LLM.

    >>> import vlm
    >>> model, processor = vlm.build_vlm("radio_v2.5-h", "Qwen/Qwen2-7B-Instruct", num_tokens=256)
    >>> model.save_pretrained("out"); processor.save_pretrained("out")
    >>> model = transformers.AutoModelForImageTextToText.from_pretrained("out")  # after import vlm

Importing the package registers ``VLMConfig`` / ``VisionLanguageModel`` / ``VLMProcessor``
with transformers' Auto classes (model type ``radio_vlm``), so saved models load without
``trust_remote_code``.
"""

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from .build import build_vlm
from .configuration import VLMConfig
from .evaluation import evaluate
from .modeling import VisionLanguageModel
from .processing import ChatTemplateError, SampleTooLongError, VLMProcessor
from .projector import Projector

AutoConfig.register(VLMConfig.model_type, VLMConfig, exist_ok=True)
AutoModelForImageTextToText.register(VLMConfig, VisionLanguageModel, exist_ok=True)
AutoProcessor.register(VLMConfig, VLMProcessor, exist_ok=True)

__all__ = [
    "ChatTemplateError",
    "Projector",
    "SampleTooLongError",
    "VLMConfig",
    "VLMProcessor",
    "VisionLanguageModel",
    "build_vlm",
    "evaluate",
]
