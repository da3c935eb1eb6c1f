"""The offline tasks: names, and task folders pointing at a local data folder.

lmms-eval 0.7.3 reads a local ``save_to_disk`` folder through ``dataset_path: <folder>`` +
``dataset_kwargs: {load_from_disk: true}`` (or a ``parquet`` builder with ``data_files``); it
expands no environment variables in task YAMLs. So the YAMLs shipped in ``tasks/`` carry a
placeholder path, and ``write_task_dir(data_dir, out)`` writes one small YAML per task that
includes the shipped one and sets ``dataset_path`` to ``data_dir/<kind>``. Point lmms-eval at
that folder (``--include_path OUT`` or ``TaskManager(include_path=OUT)``).

Built-in task names win over included ones, hence the new names (``textvqa_val_local`` ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmms_eval.tasks import TaskManager

TASKS_DIR = Path(__file__).parent / "tasks"


@dataclass(frozen=True)
class EvalTask:
    """One benchmark: its offline task (local folder) and lmms-eval's hub task."""

    kind: str  # data sub-folder and short name: textvqa | docvqa | ocrbench
    local: str  # task name of the shipped YAML
    hub: str  # lmms-eval's built-in task name
    metrics: tuple[str, ...]  # the headline metrics, in table order

    @property
    def yaml(self) -> Path:
        return TASKS_DIR / f"{self.local}.yaml"


TASKS = {
    "textvqa": EvalTask("textvqa", "textvqa_val_local", "textvqa_val", ("exact_match",)),
    "docvqa": EvalTask("docvqa", "docvqa_val_local", "docvqa_val", ("anls",)),
    "ocrbench": EvalTask(
        "ocrbench",
        "ocrbench_local",
        "ocrbench",
        ("ocrbench_accuracy", "ocrbench_item_accuracy"),
    ),
}
KINDS = tuple(TASKS)  # the data sub-folders, textvqa | docvqa | ocrbench


def resolve_tasks(names: Iterable[str], *, local: bool) -> list[str]:
    """Short names (textvqa, docvqa, ocrbench) -> lmms-eval task names (the local ones when
    ``local``); full task names pass through, so any lmms-eval task can be added."""
    resolved = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name in TASKS:
            resolved.append(TASKS[name].local if local else TASKS[name].hub)
        else:
            resolved.append(name)
    if not resolved:
        raise ValueError(f"no tasks given; use some of {list(TASKS)} or lmms-eval task names")
    return resolved


def kinds_of(task_names: Iterable[str]) -> list[str]:
    """The data sub-folders the given task names read (offline tasks only)."""
    by_local = {t.local: t.kind for t in TASKS.values()}
    return [by_local[name] for name in task_names if name in by_local]


def write_task_dir(data_dir: str | Path, out_dir: str | Path, kinds: Sequence[str] = KINDS) -> Path:
    """Write ``out_dir/<task>.yaml`` for each kind: the shipped task reading
    ``data_dir/<kind>``. Returns ``out_dir`` (an lmms-eval include path)."""
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        if kind not in TASKS:
            raise ValueError(f"unknown evaluation set {kind!r}; use some of {list(TASKS)}")
        task = TASKS[kind]
        # json-style quoting is valid YAML and survives any character in a path
        text = (
            f"# written by vlm.evaluation.local_tasks.write_task_dir: {task.local} on "
            f"{data_dir / kind}\n"
            f"include: {_quote(task.yaml.resolve())}\n"
            f"task: {task.local}\n"
            f"dataset_path: {_quote(data_dir / kind)}\n"
        )
        (out_dir / f"{task.local}.yaml").write_text(text, encoding="utf-8")
    return out_dir


def task_manager(include_path: str | Path | None, *, defaults: bool = True) -> TaskManager:
    """An lmms-eval ``TaskManager`` over ``include_path`` (a ``write_task_dir`` folder);
    ``defaults=False`` skips indexing lmms-eval's ~2000 built-in tasks (seconds)."""
    from lmms_eval.tasks import TaskManager

    return TaskManager(
        "WARNING",
        include_path=None if include_path is None else str(include_path),
        include_defaults=defaults,
    )


def _quote(path: Path) -> str:
    import json

    return json.dumps(str(path))
