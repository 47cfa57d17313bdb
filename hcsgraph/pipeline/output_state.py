"""What a compile finds in its output, and how it takes it over.

* An output that holds results needs ``overwrite`` or ``resume``; only what hcsgraph wrote is
  ever replaced (the run manifest or the state folder says so).
* Overwrite moves the earlier results aside, and deletes them only once the new run's metadata
  is in place; a compile that fails puts them back.
* Resume checks the earlier run's fingerprint (pipeline, output settings, input plate, output
  dtype) before it keeps any well, and names what differs.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from dask.base import tokenize

from hcsgraph.io import location as loc
from hcsgraph.pipeline import guard
from hcsgraph.pipeline.errors import OutputExistsError, PipelineCompileError

if TYPE_CHECKING:
    from hcsgraph.config import GlobalPipelineConfig
    from hcsgraph.pipeline.layout import OutputLayout
    from hcsgraph.pipeline.step import Pipeline

START_RECORD = "output.json"
"""In the output's state folder: the run id and fingerprint of the run that wrote it."""


class ResumeMismatchError(PipelineCompileError):
    """``resume=True`` on an output that an earlier run wrote with other settings."""


def fingerprint(pipeline_spec: dict[str, Any], cfg: GlobalPipelineConfig, backend: str, plate_digest: str,
                n_planes: int, out_dtype: Any) -> dict[str, Any]:
    """What must match for resumed wells to belong with the new ones."""
    zarr = cfg.zarr
    return {
        "pipeline": tokenize(pipeline_spec),
        "steps": [s.get("name") for s in pipeline_spec.get("steps", [])],
        "output": {
            "backend": backend,
            "compressor": getattr(zarr.compressor, "value", str(zarr.compressor)),
            "compression_level": zarr.compression_level,
            "chunk_strategy": getattr(zarr.chunk_strategy, "value", str(zarr.chunk_strategy)),
            "ome_zarr_version": zarr.ome_zarr_version,
            "pyramid_levels": zarr.pyramid_levels,
        },
        "plate": plate_digest,
        "planes": n_planes,
        "output_dtype": str(out_dtype),
    }


def differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Readable differences between two fingerprints."""
    out = []
    if earlier.get("pipeline") != now.get("pipeline"):
        out.append(f"the pipeline (earlier steps {earlier.get('steps')}, now {now.get('steps')}, or their arguments)")
    for name, value in now.get("output", {}).items():
        old = earlier.get("output", {}).get(name)
        if old != value:
            out.append(f"{name} (earlier {old!r}, now {value!r})")
    if earlier.get("plate") != now.get("plate"):
        out.append(f"the input plate (earlier {earlier.get('planes')} images, now {now.get('planes')}, "
                   "or other files)")
    if earlier.get("output_dtype") != now.get("output_dtype"):
        out.append(f"the output dtype (earlier {earlier.get('output_dtype')}, now {now.get('output_dtype')})")
    return out


class OutputState:
    """The output of one compile: lock, checks, replacement of earlier results."""

    def __init__(self, layout: OutputLayout, pipeline: Pipeline, run_id: str) -> None:
        self.layout = layout
        self.pipeline = pipeline
        self.run_id = run_id
        self.guard: guard.RunGuard | None = None
        self.moved: list[tuple[str, str]] = []  # (original, aside)
        self.trash: str | None = None
        self.fingerprint: dict[str, Any] = {}

    # -- the lock --------------------------------------------------------------------------
    def lock(self) -> guard.RunGuard:
        """Take the output's lock for this run.

        At a URL the store is asked a question first (a listing, which fails within the store's
        timeouts, naming the URL): a silent endpoint must not leave the compile waiting on a write.
        """
        if loc.is_url(self.layout.root):
            loc.exists(self.layout.root, self.layout.options)
        path = guard.acquire(self.layout.root, self.run_id, self.pipeline.name, self.layout.options)
        self.guard = guard.RunGuard(path, self.run_id, self.layout.options)
        return self.guard

    # -- what is there ---------------------------------------------------------------------
    def _earlier_manifest(self) -> dict[str, Any] | None:
        """The earlier run's manifest and start record merged (the start record wins); None if neither."""
        found: dict[str, Any] | None = None
        for path in (self.layout.manifest_path, loc.join(self.layout.state_dir, START_RECORD)):
            try:
                data = loc.read_json(path, self.layout.options)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                found = {**(found or {}), **data}
        return found

    def _artifacts(self, earlier: dict[str, Any] | None) -> list[str]:
        names = self.layout.existing_artifacts(self.pipeline)
        if earlier and not self.layout.inline_zarr:
            tables = [str(t) for t in (earlier.get("special_outputs") or {}).values()]
            for base in [*tables, *map(str, earlier.get("written") or ())]:
                for name in (base, base[: -len(".csv")] if base.endswith(".csv") else None):
                    if (name and name not in names and "/" not in name and os.sep not in name
                            and name not in ("..", ".")
                            and loc.exists(loc.join(self.layout.root, name), self.layout.options)):
                        names.append(name)
        return names

    def _owned(self, earlier: dict[str, Any] | None) -> bool:
        """Whether the output was written by hcsgraph (a manifest or the state folder)."""
        return earlier is not None or loc.isdir(self.layout.state_dir, self.layout.options)

    def prepare(self, *, overwrite: bool, resume: bool, fingerprint: dict[str, Any]) -> set[str]:
        """Check the output against overwrite/resume; returns the wells an earlier run completed."""
        self.fingerprint = fingerprint
        earlier = self._earlier_manifest()
        existing = self._artifacts(earlier)
        if not existing:
            return set()
        root = self.layout.root
        if not overwrite and not resume:
            raise OutputExistsError(
                f"output {root} already holds results ({', '.join(existing[:3])}); "
                "pass overwrite=True to replace them or resume=True to finish the missing wells",
                root, tuple(existing),
            )
        if not self._owned(earlier):
            raise OutputExistsError(
                f"output {root} holds {', '.join(existing[:3])} but no hcsgraph run manifest (run.json): hcsgraph "
                "did not write it and will not replace it; choose another output or remove those files yourself",
                root, tuple(existing), replaceable=False,
            )
        if resume:
            before = (earlier or {}).get("fingerprint")
            if before:
                diff = differences(before, fingerprint)
                if diff:
                    raise ResumeMismatchError(
                        f"output {root} was written by a run with other settings; resuming would mix results. "
                        f"What differs: {'; '.join(diff)}. Use overwrite=True or another output."
                    )
            return self.layout.completed_wells()
        self._move_aside(existing)
        return set()

    def _move_aside(self, names: list[str]) -> None:
        root = self.layout.root
        if loc.is_url(root):
            # an object store has no atomic rename (a "move" copies every object): the earlier
            # results are deleted here, before the new run's metadata is written
            targets = [root] if self.layout.inline_zarr else [loc.join(root, n) for n in names]
            for target in targets:
                loc.remove(target, self.layout.options, recursive=True, missing_ok=True)
            return
        if self.layout.inline_zarr:
            parent, name = os.path.split(root.rstrip("/"))
            aside = os.path.join(parent, f".{name}.hcsgraph-replaced-{self.run_id}")
            os.rename(root, aside)
            self.moved.append((root, aside))
            self.trash = aside
            return
        self.trash = os.path.join(root, f".hcsgraph-replaced-{self.run_id}")
        os.makedirs(self.trash)
        for name in names:
            src = os.path.join(root, name)
            dst = os.path.join(self.trash, name)
            os.rename(src, dst)
            self.moved.append((src, dst))

    # -- the new run -----------------------------------------------------------------------
    def create_stores(self, layouts: list[OutputLayout], index: Any, cfg: GlobalPipelineConfig,
                      resume: bool) -> None:
        """Write each store's metadata (kept as it is when resuming)."""
        for layout in layouts:
            layout.create_store(index, cfg, resume=resume)

    def commit(self) -> None:
        """The new run's metadata is in place: record it, drop the replaced results."""
        loc.write_json_atomic(loc.join(self.layout.state_dir, START_RECORD), {
            "run_id": self.run_id, "pipeline_name": self.pipeline.name, "fingerprint": self.fingerprint,
        }, self.layout.options)
        if self.trash is not None:
            shutil.rmtree(self.trash, ignore_errors=True)
            self.trash = None
            self.moved = []

    def abandon(self) -> None:
        """The compile failed: put replaced results back and release the lock."""
        for original, aside in reversed(self.moved):
            if os.path.lexists(original):
                if os.path.isdir(original) and not os.path.islink(original):
                    shutil.rmtree(original, ignore_errors=True)
                else:
                    os.remove(original)
            os.rename(aside, original)
        if self.trash is not None and os.path.isdir(self.trash):
            shutil.rmtree(self.trash, ignore_errors=True)
        self.moved = []
        if self.guard is not None:
            self.guard.release()


__all__ = ["OutputState", "ResumeMismatchError", "differences", "fingerprint"]
