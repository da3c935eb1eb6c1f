"""The web page of `radio-vlm ui` (gradio): ask about a page on the left, see what the merger
kept of it on the right.

Left: the page (upload, paste, or pick a held-out synthdoc page with its question), what it
costs in visual tokens, the conversation (answers stream in). Right: a slider for K and, at
that budget, the ToMe merge map, avg-pool's and pixel unshuffle's partitions of the same
encoder grid, ToMe's patches per token and each method's reconstruction error (``maps``).
The slider only redraws the maps: the model answers with the budget it runs at.

Each browser tab has its own conversation (a ``ChatSession`` kept by gradio's session id);
every event that runs the model shares one queue, so answers and maps never run at once.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from recipes.ui.maps import TITLES, encode_page, errors_table, merge_maps, sizes_chart
from vlm.chat_session import ChatSession

MAX_SESSIONS = 64  # browser tabs remembered; the oldest conversation is dropped first
MODEL_QUEUE = "model"  # concurrency id shared by every event that runs the model
CSS = "#errors table { font-size: 0.9em; } .map img { image-rendering: pixelated; }"


class Sessions:
    """One ``ChatSession`` per browser tab, the least recently used dropped past ``MAX_SESSIONS``."""

    def __init__(self, model: Any, processor: Any, **options: Any) -> None:
        self.model, self.processor, self.options = model, processor, options
        self._by_id: collections.OrderedDict[str, ChatSession] = collections.OrderedDict()

    def new(self, key: str) -> ChatSession:
        self._by_id[key] = ChatSession(self.model, self.processor, **self.options)
        self._by_id.move_to_end(key)
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return self._by_id[key]

    def get(self, key: str) -> ChatSession:
        if key not in self._by_id:
            return self.new(key)
        self._by_id.move_to_end(key)
        return self._by_id[key]


def build_app(
    model: Any,
    processor: Any,
    *,
    name: str,
    warning: str | None = None,
    max_new_tokens: int = 256,
    samples: list[tuple[Any, str]] | None = None,
) -> gr.Blocks:
    """The page for ``model``/``processor``; ``name`` titles it, ``warning`` (a budget
    override) is shown under the title, ``samples`` are (page image, question) to pick from."""
    sessions = Sessions(model, processor, max_new_tokens=max_new_tokens)
    compressor = processor.compressor
    resolution = processor.image_processor.resolution
    side = resolution // processor.patch_size
    budget = processor.num_image_tokens(resolution, resolution)  # a square page's cost
    with gr.Blocks(title="radio-vlm", analytics_enabled=False) as app:
        gr.Markdown(
            f"### radio-vlm · `{name}`\nThe model reads a square page as **{budget} visual "
            f"tokens** ({TITLES.get(compressor.method, compressor.method)}). The slider redraws "
            "the maps on the right at another budget K; the model keeps answering with its own."
            + (f"\n\n**{warning}**" if warning else "")
        )
        with gr.Row():
            with gr.Column(scale=4):
                page = gr.Image(
                    type="pil",
                    label="Page",
                    sources=["upload", "clipboard"],
                    height=300,
                    elem_id="page",
                )
                cost = gr.Markdown("Upload a page or pick one below.", elem_id="page-cost")
                chat = gr.Chatbot(label="Conversation", height=260, elem_id="chat")
                with gr.Row():
                    question = gr.Textbox(
                        placeholder="Ask about the page, then press Enter",
                        label="Question",  # the examples' column title
                        show_label=False,
                        scale=4,
                        elem_id="question",
                    )
                    ask = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                restart = gr.Button("New conversation", size="sm", elem_id="restart")
                if samples:
                    gr.Examples(
                        _sample_files(samples),
                        inputs=[page, question],
                        label="Or pick a page (held-out synthdoc pages and their questions)",
                    )
            with gr.Column(scale=5):
                k = gr.Slider(
                    1,
                    side * side,
                    value=min(compressor.num_tokens or 16, side * side),
                    step=1,
                    label="K, visual tokens per page in the maps",
                    elem_id="k",
                )
                with gr.Row():
                    maps = [
                        gr.Image(
                            label=TITLES[m],
                            interactive=False,
                            elem_id=f"map-{m}",
                            elem_classes="map",
                            buttons=["fullscreen"],
                        )
                        for m in ("tome", "avgpool", "unshuffle")
                    ]
                sizes = gr.Image(
                    label="ToMe: patches per token", interactive=False, elem_id="sizes"
                )
                table = gr.Markdown(elem_id="errors")
        encoded = gr.State(None)

        def on_page(image: Any, budget_k: float, request: gr.Request):
            session = sessions.new(request.session_hash)  # a new page starts a new conversation
            if image is None:
                return None, "Upload a page or pick one below.", [], *_no_maps(), gr.Slider()
            info = session.add_image(image)
            enc = encode_page(model, processor, image)
            h, w = enc.grid_hw
            (ph, pw), n = info.processed_size, info.visual_tokens
            text = (
                f"This page: {pw}x{ph} px, {h}x{w} = {h * w} patches -> **{n} visual tokens** "
                f"for the model ({compressor.method})."
            )
            budget_k = min(int(budget_k), h * w)
            slider = gr.Slider(maximum=h * w, value=budget_k)
            return enc, text, [], *_draw(enc, budget_k), slider

        def on_k(enc: Any, budget_k: float):
            return _draw(enc, int(budget_k)) if enc is not None else _no_maps()

        def on_ask(text: str, history: list, image: Any, request: gr.Request):
            session = sessions.get(request.session_hash)
            if image is not None and not session.images:  # e.g. after "New conversation"
                session.add_image(image)
            history = [*history, _message("user", text), _message("assistant", "")]
            yield history, ""
            try:
                for piece in session.ask(text):
                    history[-1]["content"] += piece
                    yield history, ""
            except ValueError as err:  # an empty question, a conversation past the context
                history[-1]["content"] = f"error: {err}"
                yield history, text

        def on_restart(request: gr.Request):
            sessions.new(request.session_hash)
            return []

        outputs = [encoded, cost, chat, *maps, sizes, table, k]
        page.change(on_page, [page, k], outputs, concurrency_id=MODEL_QUEUE)
        k.change(
            on_k,
            [encoded, k],
            [*maps, sizes, table],
            concurrency_id=MODEL_QUEUE,
            trigger_mode="always_last",
            show_progress="hidden",
        )
        for event in (ask.click, question.submit):
            event(on_ask, [question, chat, page], [chat, question], concurrency_id=MODEL_QUEUE)
        restart.click(on_restart, None, chat, concurrency_id=MODEL_QUEUE)
    return app


def launch_options(host: str, port: int) -> dict[str, Any]:
    """``gr.Blocks.launch`` settings: no share link, no server-side rendering, no web fonts
    (the page must work offline and fetch nothing beyond the server)."""
    fonts = ["ui-sans-serif", "system-ui", "sans-serif"]
    return {
        "server_name": host,
        "server_port": port,
        "share": False,
        "ssr_mode": False,
        "show_error": True,
        "theme": gr.themes.Default(font=fonts, font_mono=["ui-monospace", "monospace"]),
        "css": CSS,
        "footer_links": [],
    }


def _draw(enc: Any, budget_k: int) -> list[Any]:
    """The three maps, ToMe's sizes chart and the error table at budget ``budget_k``."""
    maps = merge_maps(enc, budget_k)
    tome = maps[0]
    chart = None
    if tome.sizes is not None:
        single = int((tome.sizes == 1).sum())
        title = f"largest token: {int(tome.sizes.max())} patches; {single} of {tome.tokens} single"
        chart = sizes_chart(tome.sizes, title)
    pictures = [gr.Image(m.picture, label=_map_label(m)) for m in maps]
    return [*pictures, chart, errors_table(maps, enc.grid_hw)]


def _map_label(m: Any) -> str:
    if m.problem:
        return f"{TITLES[m.method]}: cannot give this K"
    return f"{TITLES[m.method]}: {m.tokens} tokens"


def _no_maps() -> list[Any]:
    return [None, None, None, None, ""]


def _message(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _sample_files(samples: list[tuple[Any, str]]) -> list[list[str]]:
    """Examples are served as files: the sample pages written to a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="radio-vlm-ui-"))
    rows = []
    for i, (image, question) in enumerate(samples):
        if not isinstance(image, (str, Path)):
            image.save(folder / f"page{i}.png")
            image = folder / f"page{i}.png"
        rows.append([str(image), question])
    return rows
