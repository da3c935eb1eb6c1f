"""`radio-vlm chat`: talk to a trained model in the terminal, the answer streaming as it comes.

    radio-vlm chat --pretrained DIR --image page.png "What is the total?"   # one question
    radio-vlm chat --pretrained DIR --image page.png                      # a conversation

Without a prompt it is a conversation: each line is a question; ``/image PATH`` adds a picture
to the next question, ``/reset`` starts over, ``/quit`` (or Ctrl-D) leaves; Ctrl-C stops an
answer. Each image's cost in visual tokens is printed when it is added. Answers go to stdout,
everything else (image costs, warnings, errors) to stderr, so a one-shot answer can be piped.
Bad input (a missing file, not an image, a folder that is not a saved model) is one line on
stderr naming the fix, exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

from recipes.chat_model import DEMO_MODEL, ChatInputError, load_chat_model, one_line
from token_merge import BUDGETED_METHODS

SUMMARY = "talk to a trained model: one question, or a conversation with images added between turns"
COMMANDS = "/image PATH adds a picture to the next question, /reset starts over, /quit leaves"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="ask this and exit (default: a conversation)")
    parser.add_argument(
        "--pretrained",
        type=Path,
        default=DEMO_MODEL,
        help=f"a saved model's folder (default: {DEMO_MODEL}, the model `make demo` trains)",
    )
    parser.add_argument(
        "--image", action="append", default=[], metavar="FILE", help="a picture (repeatable)"
    )
    parser.add_argument(
        "--compressor",
        choices=BUDGETED_METHODS,
        help="token merging to run with instead of the saved one (an experiment)",
    )
    parser.add_argument(
        "--num-tokens", type=int, metavar="K", help="visual tokens per image instead of the saved K"
    )
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest answer (tokens)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: sample")
    parser.add_argument("--system", help="a system prompt (default: the chat template's own)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when there is one)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.prompt is not None and not args.prompt.strip():
            raise ChatInputError("the prompt is empty; ask a question, or leave it out to converse")
        images = [read_image(path) for path in args.image]  # bad input fails before loading
        session = open_session(args)
        for path, image in zip(args.image, images, strict=True):
            add_image(session, path, image)
        if args.prompt is not None:
            answer(session, args.prompt)
            return 0
        converse(session, sys.stdin)
        return 0
    except ChatInputError as err:
        print(f"radio-vlm chat: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def open_session(args: argparse.Namespace) -> Any:
    """The model of ``args.pretrained`` (with any override) in a ``ChatSession``."""
    from transformers.utils import logging as hf_logging

    from vlm.chat_session import ChatSession

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the conversation
    model, processor, warning = load_chat_model(
        args.pretrained,
        device=args.device,
        compressor=args.compressor,
        num_tokens=args.num_tokens,
    )
    if warning:
        print(warning, file=sys.stderr)
    try:
        return ChatSession(
            model,
            processor,
            system_prompt=args.system,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
        )
    except ValueError as err:
        raise ChatInputError(str(err)) from err


def read_image(path: str | Path) -> Any:
    """The decoded picture at ``path`` (a PIL image); ``ChatInputError`` for a missing file, a
    folder or something Pillow cannot decode, checked before the model loads."""
    from encoder.image_loading import ImageLoadError, load_image

    path = Path(path).expanduser()
    if not path.exists():
        raise ChatInputError(f"no such image: {path}; check the path")
    if not path.is_file():
        raise ChatInputError(f"{path} is a folder; --image and /image take one image file")
    try:
        return load_image(path)
    except ImageLoadError as err:
        raise ChatInputError(
            f"{path} is not an image Pillow can read ({err.reason}: {one_line(err)}); pass a "
            "PNG, JPEG, WebP or similar file"
        ) from err


def add_image(session: Any, path: str | Path, image: Any = None) -> None:
    """Add the picture at ``path`` (already decoded: ``image``) to the next question and print
    what it costs."""
    try:
        info = session.add_image(read_image(path) if image is None else image)
    except ChatInputError:
        raise
    except ValueError as err:  # a budget K the image's patch grid cannot give
        raise ChatInputError(f"cannot use {path}: {one_line(err)}") from err
    h, w = info.processed_size
    p = session.processor.patch_size
    method = session.processor.compressor.method
    print(
        f"[image {len(session.images)}] {Path(path).name}: {w}x{h} px, {(h // p) * (w // p)} "
        f"patches -> {info.visual_tokens} visual tokens ({method})",
        file=sys.stderr,
    )


def answer(session: Any, question: str, out: TextIO | None = None) -> str:
    """Stream the answer to ``question`` onto ``out`` (stdout); returns it."""
    out = out or sys.stdout
    pieces = []
    try:
        # closing: Ctrl-C mid-answer stops the generation thread at once
        with contextlib.closing(session.ask(question)) as stream:
            for piece in stream:
                pieces.append(piece)
                out.write(piece)
                out.flush()
    except ValueError as err:  # the conversation outgrew the context, an empty question
        raise ChatInputError(one_line(err)) from err
    if not pieces or not "".join(pieces).strip():
        print("[the model's answer is empty]", file=sys.stderr)
    out.write("\n")
    out.flush()
    return "".join(pieces)


def converse(session: Any, lines: TextIO) -> None:
    """The interactive loop: questions and commands from ``lines`` until /quit or its end."""
    print(f"Chatting with the model; {COMMANDS}.", file=sys.stderr)
    while True:
        print("you> ", end="", file=sys.stderr, flush=True)
        line = lines.readline()
        if not line:  # end of input (Ctrl-D)
            print(file=sys.stderr)
            return
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not command(session, line):
                    return
                continue
            print("model> ", end="", flush=True)
            answer(session, line)
        except ChatInputError as err:  # a bad path mid-conversation: say so, carry on
            print(f"error: {err}", file=sys.stderr)
        except KeyboardInterrupt:  # Ctrl-C stops this answer, not the conversation
            print("\n[answer stopped]", file=sys.stderr)


def command(session: Any, line: str) -> bool:
    """Run a /command; False when it ends the conversation."""
    name, _, rest = line.partition(" ")
    if name in ("/quit", "/exit"):
        return False
    if name == "/reset":
        session.reset()
        print("[conversation cleared]", file=sys.stderr)
    elif name == "/image":
        try:
            paths = shlex.split(rest)
        except ValueError as err:  # an unbalanced quote
            raise ChatInputError(f"/image {rest}: {err}; quote a path with spaces whole") from None
        if not paths:
            raise ChatInputError("/image needs a path: /image PATH")
        for path in paths:
            add_image(session, path)
    elif name == "/help":
        print(COMMANDS, file=sys.stderr)
    else:
        raise ChatInputError(f"unknown command {name}; {COMMANDS}")
    return True
