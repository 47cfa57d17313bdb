"""Fuse linear runs of tasks (load → step → step → …) into one task per group.

A run of tasks where each one is the only consumer of the one before, and the only thing it
consumes, does not need a round trip through the worker's task machinery between its links: the
fused task calls the links in order and drops each intermediate as soon as the next link has
it. Tasks that ask for different worker resources (a GPU step after CPU steps) are never fused
together, so resource restrictions stay exact.

The fused key is named after its first and last links, ``("load→count_cells-<token>", "B03",
1, 1, 1)``: short on every dashboard page (task stream, progress bars, task groups), and still
saying where the run starts and ends. Every link is in the task itself (:func:`links`, the
``TaskChain`` shown on the dashboard's task page) and per-step timings stay in the run report.
Unfused tasks keep one name per step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

from dask.task_spec import Task, TaskRef
from dask.utils import key_split

ARROW = "\u2192"
"""Joins the first and last link of a fused task's name (``load→count_cells``)."""


class TaskChain:
    """Tasks run one after the other; each gets the previous one's result (the first, the inputs)."""

    __slots__ = ("inputs", "tasks")

    def __init__(self, tasks: tuple[Task, ...], inputs: tuple[Any, ...]) -> None:
        self.tasks = tasks
        self.inputs = inputs

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskChain, (self.tasks, self.inputs))

    def __repr__(self) -> str:
        return f"TaskChain({' -> '.join(str(t.key) for t in self.tasks)})"


def run_chain(chain: TaskChain, *inputs: Any) -> Any:
    """Run a :class:`TaskChain`; only the current link's input is held at any time."""
    value = chain.tasks[0](dict(zip(chain.inputs, inputs, strict=True)))
    for previous, task in pairwise(chain.tasks):
        value = task({previous.key: value})
    return value


def fused_name(keys: list[Any]) -> str:
    """``first→last`` from the links' names as the dashboard names them (``key_split``)."""
    names = [key_split(k) for k in keys]
    return names[0] if len(names) == 1 else f"{names[0]}{ARROW}{names[-1]}"


def joined_name(keys: list[Any]) -> str:
    """``a+b+c``: every link's name; used where two fused runs would get the same short key."""
    return "+".join(key_split(k) for k in keys)


def links(task: Task) -> list[str]:
    """The names of the steps a task runs: every link of a fused task, else the task's own name."""
    chain = task.args[0] if task.func is run_chain and task.args else None
    if isinstance(chain, TaskChain):
        return [key_split(link.key) for link in chain.tasks]
    return [key_split(task.key)]


def fuse_linear_chains(
    tasks: dict[Any, Task],
    resources: dict[Any, dict[str, float]],
    keep: Iterable[Any] = (),
    inner_link: Callable[[Task], Task] | None = None,
) -> tuple[dict[Any, Task], dict[Any, dict[str, float]]]:
    """Fuse every linear run of two or more tasks; returns the new tasks and resources.

    ``keep``: keys that are never fused (the result key). A run ends before a task with several
    inputs, after a task with several consumers, and where the resources differ.
    ``inner_link``: applied to every link but the last of a run (whose result now never leaves
    the fused task), e.g. to keep it in memory instead of a scratch store.
    """
    keep = set(keep)
    dependencies = {key: task.dependencies for key, task in tasks.items()}
    dependents: dict[Any, set[Any]] = defaultdict(set)
    for key, deps in dependencies.items():
        for dep in deps:
            dependents[dep].add(key)

    def joins(before: Any, after: Any) -> bool:
        return (
            before in tasks and before not in keep and after not in keep
            and dependencies[after] == {before} and dependents[before] == {after}
            and resources.get(before) == resources.get(after)
        )

    chains: list[list[Any]] = []
    for key in tasks:
        deps = dependencies[key]
        if len(deps) == 1 and joins(next(iter(deps)), key):
            continue  # not the head of its run
        run = [key]
        while len(dependents[run[-1]]) == 1:
            (after,) = dependents[run[-1]]
            if not joins(run[-1], after):
                break
            run.append(after)
        if len(run) > 1:
            chains.append(run)

    fused = dict(tasks)
    fused_resources = dict(resources)
    renames: dict[Any, Any] = {}
    for run in chains:
        new_key = _fused_key(run, fused)
        if new_key is None:
            continue  # a name clash: leave this run unfused
        top = run[-1]
        inputs = tuple(dependencies[run[0]])
        members = [tasks[k] for k in run]
        if inner_link is not None:
            members[:-1] = [inner_link(task) for task in members[:-1]]
        chain = TaskChain(tuple(members), inputs)
        for key in run:
            del fused[key]
        fused[new_key] = Task(new_key, run_chain, chain, *[TaskRef(dep) for dep in inputs])
        resource = resources.get(top)
        for key in run:
            fused_resources.pop(key, None)
        if resource:
            fused_resources[new_key] = resource
        renames[top] = new_key

    if renames:
        for key, task in list(fused.items()):
            if task.dependencies & renames.keys():
                fused[key] = task.substitute(renames)
    return fused, fused_resources


def _fused_key(run: list[Any], taken: dict[Any, Any]) -> Any:
    """The key of a fused run: ``first→last`` (or, if taken, every link) with the last link's token and group."""
    top = run[-1]
    head = str(top[0]) if isinstance(top, tuple) else str(top)
    token = f"-{head.rsplit('-', 1)[1]}" if "-" in head else ""
    for name in (fused_name(run), joined_name(run)):
        key = (name + token, *top[1:]) if isinstance(top, tuple) else name + token
        if key not in taken:
            return key
    return None
