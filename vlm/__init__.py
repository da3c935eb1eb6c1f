"""The vision-language model: encoder -> token merger -> projector -> any Hugging Face LLM.

For now this package holds the `radio-vlm` command line (``vlm.cli``) and its demos; the
model, processor, data, training and evaluation glue land here next.
"""
