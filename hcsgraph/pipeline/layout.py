"""Where a run writes its results, and how planes map onto the output stores.

An output directory holds::

    plate.ome.zarr/            the final images (materialization backend zarr), or
    images/<well>/<well>_s<site>_w<channel>_z<z>_t<t>.tif   (backend disk)
    <sub_dir>/...              a step's own output (FunctionStep(materialize=...)), same layout
    <special>/<group>.csv|json special outputs materialised per group
    <special>.csv              each tabular special output for the whole plate
    run.json                   the run manifest (pipeline, config, versions, per-well status)
    .hcsgraph/wells/<well>.json  written when every write of the well has landed
    .hcsgraph/scratch/         intermediates, when they do not fit the memory limit
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hcsgraph.config import GlobalPipelineConfig, MaterializationBackend, MemoryType, ZarrChunkStrategy
from hcsgraph.io import location as loc
from hcsgraph.pipeline import tasks as T
from hcsgraph.pipeline.errors import PipelineCompileError
from hcsgraph.pipeline.planes import PlaneId, well_sort_key

if TYPE_CHECKING:
    from hcsgraph.pipeline.step import Pipeline

ZARR_STORE = "plate.ome.zarr"
TIFF_DIR = "images"
MANIFEST = "run.json"
STATE_DIR = ".hcsgraph"


@dataclass
class WriteRequest:
    """A group's final stack to be written to this layout."""

    source_key: Any
    members: list[PlaneId]
    source_type: MemoryType
    ctx: T.GroupContext
    dtype: np.dtype
    name: str
    labels: bool = False


class OutputLayout:
    """Paths of one output: the run's, a step's own ``materialize`` directory, or a label image.

    A label layout (``label="nuclei"``) writes into its parent's store: ``labels/nuclei`` inside
    each field of the OME-Zarr plate, or ``labels/nuclei/<well>/...tif`` beside the TIFF folder.
    It shares the parent's field, z and t positions; its channels are its own.
    """

    def __init__(self, root: str, backend: MaterializationBackend, n_levels: int = 1,
                 chunk_strategy: ZarrChunkStrategy | str = ZarrChunkStrategy.ADAPTIVE,
                 label: str | None = None, parent: OutputLayout | None = None,
                 options: Any = None) -> None:
        self.root = root
        self.scratch_dir: str | None = None
        """Where intermediates go when they do not fit in memory (default: inside the state folder)."""
        self.options = options
        """fsspec storage options of the output (None: local, or fsspec's defaults)."""
        self.backend = MaterializationBackend(backend)
        self.n_levels = n_levels
        self.chunk_strategy = ZarrChunkStrategy(chunk_strategy)
        self.label = label
        self.parent = parent
        self.label_layouts: dict[str, OutputLayout] = {}
        self.subs: dict[str, OutputLayout] = {}
        self.requests: list[WriteRequest] = []
        self._fields: dict[int, int] = {}
        self._channels: dict[int, int] = {}
        self._zs: dict[int, int] = {}
        self._ts: dict[int, int] = {}
        self.dtype: np.dtype | None = None

    # -- paths -----------------------------------------------------------------------------
    @property
    def inline_zarr(self) -> bool:
        """An output named ``*.zarr`` is the OME-Zarr plate itself (run files live inside it)."""
        return self.backend is MaterializationBackend.ZARR and self.root.rstrip("/").endswith(".zarr")

    @property
    def image_store(self) -> str:
        """The OME-Zarr plate or the TIFF directory."""
        if self.parent is not None:
            if self.backend is MaterializationBackend.ZARR:
                return self.parent.image_store
            return loc.join(self.root, "labels", _safe(self.label or "labels"))
        if self.inline_zarr:
            return self.root
        name = ZARR_STORE if self.backend is MaterializationBackend.ZARR else TIFF_DIR
        return loc.join(self.root, name)

    @property
    def state_dir(self) -> str:
        return loc.join(self.root, STATE_DIR)

    @property
    def scratch_root(self) -> str:
        return self.scratch_dir or loc.join(self.state_dir, "scratch")

    @property
    def manifest_path(self) -> str:
        return loc.join(self.root, MANIFEST)

    def marker_path(self, well: str) -> str:
        """The file that says a well is complete."""
        return loc.join(self.state_dir, "wells", f"{well}.json")

    def scratch_path(self, step: str, label: str, backend: str) -> str:
        suffix = ".npy" if backend == "disk" else ".zarr"
        return loc.join(self.scratch_root, _safe(step), f"{label}{suffix}")

    def special_path(self, name: str, label: str) -> str:
        """Base path (no extension) a materializer writes one group's special output to."""
        return loc.join(self.root, _safe(name), label)

    def sub_layout(self, sub_dir: str, backend: MaterializationBackend) -> OutputLayout:
        """The layout of a step's own output directory."""
        existing = self.subs.get(sub_dir)
        if existing is None:
            existing = OutputLayout(loc.join(self.root, sub_dir), backend, self.n_levels, self.chunk_strategy,
                                    options=self.options)
            self.subs[sub_dir] = existing
        elif existing.backend is not MaterializationBackend(backend):
            raise PipelineCompileError(f"two steps materialise to {sub_dir!r} with different backends")
        return existing

    @property
    def image_path(self) -> str:
        """Where inside each field this layout's image lives ("" for the field's own image)."""
        if self.parent is not None and self.backend is MaterializationBackend.ZARR:
            from hcsgraph.io.omezarr_labels import label_path

            return label_path(self.label or "labels")
        return ""

    def labels_layout(self, name: str) -> OutputLayout:
        """The layout of label image ``name`` of this output."""
        existing = self.label_layouts.get(name)
        if existing is None:
            existing = OutputLayout(self.root, self.backend, self.n_levels, self.chunk_strategy, label=name,
                                    parent=self, options=self.options)
            self.label_layouts[name] = existing
        return existing

    def all_layouts(self) -> list[OutputLayout]:
        """This layout (first), its label images and its step sub-layouts."""
        return [self, *self.label_layouts.values(), *self.subs.values()]

    # -- existing results ------------------------------------------------------------------
    def existing_artifacts(self, pipeline: Pipeline) -> list[str]:
        """Results of an earlier run found in the output directory."""
        if self.inline_zarr:
            return [n for n in ("zarr.json", ".zattrs", ".zgroup") if loc.exists(loc.join(self.root, n), self.options)]
        names = [ZARR_STORE, TIFF_DIR, MANIFEST, STATE_DIR, "labels"]
        names += [s.materialize.sub_dir for s in pipeline.steps if s.materialize is not None]
        if loc.is_url(self.root):
            present = set(loc.listdir(self.root, self.options)) if loc.isdir(self.root, self.options) else set()
            return [n for n in names if n in present]
        return [n for n in names if os.path.lexists(loc.join(self.root, n))]

    def completed_wells(self) -> set[str]:
        """Wells an earlier run marked complete."""
        folder = loc.join(self.state_dir, "wells")
        done = set()
        if not loc.isdir(folder, self.options):
            return done
        names = [n for n in loc.listdir(folder, self.options) if n.endswith(".json")]
        contents = loc.read_many([loc.join(folder, n) for n in names], self.options)
        for name in names:
            data = contents.get(loc.join(folder, name))
            try:
                if data is not None and json.loads(data).get("status") == "complete":
                    done.add(name[: -len(".json")])
            except (ValueError, AttributeError):
                continue
        return done

    # -- planning --------------------------------------------------------------------------
    def request(self, source_key: Any, members: list[PlaneId], source_type: MemoryType, ctx: T.GroupContext,
                dtype: np.dtype, name: str, labels: bool = False) -> None:
        """Ask for a group's stack to be written here (``labels``: downsample by nearest, not mean)."""
        self.requests.append(WriteRequest(source_key, list(members), source_type, ctx, np.dtype(dtype), name,
                                          labels))

    @property
    def labels(self) -> bool:
        """Whether this output holds labels or masks (pyramids by nearest, never by mean)."""
        return any(r.labels for r in self.requests)

    def write_units(self) -> list[list[WriteRequest]]:
        """The requests grouped so that every chunk or shard file has exactly one writer.

        Requests whose planes share a chunk (a z-stack with the FIELD strategy, a whole field with
        WELL) go to one write task; with ADAPTIVE chunking and TIFF output each request is its own.
        """
        from hcsgraph.io.chunking import chunk_owner

        parent = list(range(len(self.requests)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        if self.backend is MaterializationBackend.ZARR:
            owners: dict[tuple[Any, ...], int] = {}
            for i, request in enumerate(self.requests):
                for p in request.members:
                    target = self.target(p)
                    owner = (p[0], target.field, *chunk_owner(self.chunk_strategy, target.t, target.c, target.z))
                    j = owners.setdefault(owner, i)
                    parent[find(i)] = find(j)
        units: dict[int, list[WriteRequest]] = {}
        for i, request in enumerate(self.requests):
            units.setdefault(find(i), []).append(request)
        return list(units.values())

    def plan(self, index: Any) -> None:
        """Fix the field/channel/z/t indices of every requested plane."""
        dtypes = {r.dtype for r in self.requests}
        if len(dtypes) > 1:
            raise PipelineCompileError(
                f"output {self.root}: groups end with different dtypes {sorted(map(str, dtypes))}; "
                "set output_dtype= on the last step"
            )
        self.dtype = dtypes.pop() if dtypes else np.dtype(index.dtype)
        planes = [p for r in self.requests for p in r.members]
        self._channels = _positions(p[2] for p in planes)
        if self.parent is not None:  # planned after its parent: the same fields, z and t
            self._fields, self._zs, self._ts = self.parent._fields, self.parent._zs, self.parent._ts
            return
        self._fields = _positions(p[1] for p in planes)
        self._zs = _positions(p[3] for p in planes)
        self._ts = _positions(p[4] for p in planes)

    def target(self, p: PlaneId) -> T.PlaneTarget:
        """Where plane ``p`` is written."""
        well, site, channel, z, t = p
        tiff = None
        if self.backend is MaterializationBackend.DISK:
            tiff = loc.join(self.image_store, well, f"{well}_s{site}_w{channel}_z{z}_t{t}.tif")
        return T.PlaneTarget(self._fields[site], self._ts[t], self._channels[channel], self._zs[z], tiff)

    def create_store(self, index: Any, cfg: GlobalPipelineConfig, resume: bool = False) -> None:
        """Write the store's metadata once, before any pixels (kept as it is when resuming)."""
        if not self.requests:
            return
        if self.backend is MaterializationBackend.DISK:
            loc.makedirs(self.image_store, self.options)
            return
        if self.parent is not None:
            return  # written with the parent's store
        if resume and loc.exists(self.image_store, self.options):
            return
        from hcsgraph.io.omezarr import create_plate

        wells = sorted({p[0] for r in self.requests for p in r.members}, key=well_sort_key)
        rows = list(index.rows)
        columns = list(index.columns)
        names = getattr(index, "channel_names", {}) or {}
        channel_names = [str(names.get(c, f"channel {c}")) for c in self._channels]
        colours = getattr(index, "channel_colors", None) or {}
        pixel_size = getattr(index, "pixel_size_um", None)
        z_spacing = getattr(index, "z_spacing_um", None) if len(self._zs) > 1 else None
        interval = getattr(index, "time_interval_s", None) if len(self._ts) > 1 else None
        y, x = (int(n) for n in index.image_shape)
        create_plate(
            self.image_store,
            plate_name=str(getattr(index, "name", "plate")),
            rows=rows,
            columns=columns,
            wells=wells,
            fields=max(len(self._fields), 1),
            shape_tczyx=(len(self._ts), len(self._channels), len(self._zs), y, x),
            dtype=self.dtype,
            channel_names=channel_names,
            channel_colors=[colours.get(c) for c in self._channels],
            pixel_size_um=pixel_size,
            z_spacing_um=z_spacing,
            time_interval_s=interval,
            zarr_config=cfg.zarr,
            n_levels=self.n_levels,
            overwrite=True,
            storage_options=self.options,
        )
        labels = {name: lay for name, lay in self.label_layouts.items() if lay.requests}
        if labels:
            from hcsgraph.io.omezarr_labels import create_labels

            create_labels(
                self.image_store,
                {name: ((len(self._ts), len(lay._channels), len(self._zs), y, x), lay.dtype)
                 for name, lay in labels.items()},
                wells=wells,
                fields=max(len(self._fields), 1),
                zarr_config=cfg.zarr,
                n_levels=self.n_levels,
                pixel_size_um=pixel_size,
                z_spacing_um=z_spacing,
                time_interval_s=interval,
                storage_options=self.options,
            )



def _positions(values: Any) -> dict[int, int]:
    """Each distinct value → its 0-based position in sorted order."""
    return {v: i for i, v in enumerate(sorted(set(values)))}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "output"
