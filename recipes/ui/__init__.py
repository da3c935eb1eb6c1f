"""`radio-vlm ui`: a web page to ask a trained model about a page and see what its token
merger kept (``cli``: the command; ``app``: the gradio page; ``maps``: the pictures)."""
