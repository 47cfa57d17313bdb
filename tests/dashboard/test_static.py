"""The static plate heat map (matplotlib) of a finished run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hcsgraph.dashboard.static import plot_plate, well_values


def fake_result(wells: list[str], failed: tuple[str, ...] = ()) -> SimpleNamespace:
    counts = pd.DataFrame({
        "well": [w for w in wells if w not in failed for _ in range(2)],
        "site": [s for w in wells if w not in failed for s in (1, 2)],
        "cell_count": [float(i) for i in range(2 * (len(wells) - len(failed)))],
    })
    status = pd.DataFrame({"well": wells, "status": ["failed" if w in failed else "complete" for w in wells]})
    return SimpleNamespace(special_outputs={"cell_counts": counts}, wells=status)


def test_values_per_well_are_summed_or_averaged():
    result = fake_result(["A01", "A02"])
    assert well_values(result, "cell_count").to_dict() == {"A01": 1.0, "A02": 5.0}
    assert well_values(result, "cell_counts.cell_count", "mean").to_dict() == {"A01": 0.5, "A02": 2.5}
    with pytest.raises(ValueError, match=r"cell_counts\.cell_count"):
        well_values(result, "area")
    with pytest.raises(ValueError, match="aggregate"):
        well_values(result, "cell_count", "mode")


@pytest.mark.parametrize(("fmt", "corner"), [(96, "H12"), (384, "P24"), (1536, "AF48")])
def test_a_png_heat_map_with_a_colour_bar(tmp_path, fmt, corner):
    result = fake_result(["A01", "B02", "C03", corner], failed=("B02",))
    path = tmp_path / "plate.png"
    fig = plot_plate(result, "cell_count", path=path, plate_format=fmt)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plate, bar = fig.axes
    assert bar.get_ylabel() == "cell_count (sum)"
    assert len(plate.get_xticks()) == int(corner[-2:]) and plate.get_yticklabels()[-1].get_text() == corner[:-2]
    cells = plate.collections[0]
    assert np.allclose(sorted(cells.get_array()), [1.0, 5.0, 9.0])  # failed B02 has no value
