"""A small cluster on 127.0.0.1 with the plate page, and tiny plates, for the dashboard tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hcsgraph.plate import open_plate
from hcsgraph.plate.synthetic import make_plate


@pytest.fixture(scope="session")
def page_cluster():
    """One worker process, its dashboard on 127.0.0.1, the plate page registered (as local_cluster does)."""
    from distributed import Client, LocalCluster

    from hcsgraph.dashboard import register_plate_page

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit="2GiB") as cluster:
        with Client(cluster) as client:
            assert register_plate_page(client)
        yield cluster


@pytest.fixture()
def page_client(page_cluster):
    from distributed import Client

    with Client(page_cluster) as client:
        yield client


def truncate_image(plate, well: str) -> str:
    """Cut a well's first image to a third: reading it fails with a message naming the file."""
    path = open_plate(plate.path).table.query("well == @well")["path"].iloc[0]
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 3])
    return path


@pytest.fixture()
def failing_plate(tmp_path):
    """Six wells of one 48×48 image each; B02's image is truncated."""
    plate = make_plate(tmp_path / "plate", wells=["A01", "A02", "A03", "B01", "B02", "B03"], sites=1,
                       channels=1, size=(48, 48), seed=3)
    return SimpleNamespace(path=plate.path, bad_file=truncate_image(plate, "B02"))


def plugin_summary(client) -> list[dict]:
    """The plugin's runs, read on the scheduler."""
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins["hcsgraph-plate"].summary())
