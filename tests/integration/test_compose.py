"""The container image and docker/compose.yaml: a scheduler and two workers in podman, a pipeline run on them.

The image is built once per session from this checkout (the same hcsgraph as the host) FROM a local
Debian image made with debootstrap (no registry is needed), reusing podman's layer cache: a cold
build takes minutes, a rebuild after a code change seconds. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import PIPELINE_FILE, REPO, Reference, check, free_port, run_cli

BASE_IMAGE = "localhost/hcsgraph-test-base:{suite}"
IMAGE = "localhost/hcsgraph:test"
DEBIAN_SUITES = {(3, 11): "bookworm", (3, 13): "trixie"}  # the Debian release whose python3 is this Python's
BUILD_TIMEOUT = 1800

# the first test pays for the image build (minutes when nothing is cached): more than the suite's 300 s
pytestmark = [pytest.mark.integration, pytest.mark.timeout(BUILD_TIMEOUT + 600)]


def _podman(*args: str, env: dict[str, str], timeout: float = 300, check_rc: bool = True) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check_rc and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout


def _compose_command() -> list[str] | None:
    script = Path(sys.executable).with_name("podman-compose")
    if script.exists():
        return [str(script)]
    found = shutil.which("podman-compose")
    return [found] if found else None


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment podman runs in: runc and raised ulimits (crun and the default rlimits fail on some hosts)."""
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (make test installs it when run as root)")
    if _compose_command() is None:
        pytest.skip("podman-compose is not installed (pip install podman-compose)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    lines = ["[containers]", 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]']
    if shutil.which("runc"):
        lines += ["[engine]", 'runtime = "runc"']
    conf.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    done = subprocess.run(["podman", "info"], capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"podman does not work here: {done.stderr.strip()[-300:]}")
    return env


def _debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb.debian.org when none is named)."""
    for folder in (Path("/etc/apt/sources.list.d"), Path("/etc/apt")):
        for path in sorted(folder.glob("*.sources")) + sorted(folder.glob("*.list")):
            for line in path.read_text().splitlines():
                words = line.split()
                if line.startswith("URIs:") and len(words) > 1 and "security" not in words[1]:
                    return words[1]
                if line.startswith("deb ") and len(words) > 1 and "security" not in line:
                    return words[1] if not words[1].startswith("[") else words[2]
    return "http://deb.debian.org/debian"


@pytest.fixture(scope="session")
def base_image(podman_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Debian image whose python3 has this interpreter's minor version, made once with debootstrap."""
    if os.environ.get("HCSGRAPH_TEST_BASE_IMAGE"):
        return os.environ["HCSGRAPH_TEST_BASE_IMAGE"]
    suite = DEBIAN_SUITES.get(sys.version_info[:2])
    if suite is None:
        pytest.skip(f"no Debian release ships Python {sys.version_info[0]}.{sys.version_info[1]}: set "
                    "HCSGRAPH_TEST_BASE_IMAGE to a base image with it")
    name = BASE_IMAGE.format(suite=suite)
    if subprocess.run(["podman", "image", "exists", name], env=podman_env).returncode == 0:
        return name
    if not shutil.which("debootstrap") or os.geteuid() != 0:
        pytest.skip("making the base image needs debootstrap and root (or set HCSGRAPH_TEST_BASE_IMAGE)")
    rootfs = tmp_path_factory.mktemp("rootfs")
    try:
        done = subprocess.run(["debootstrap", "--variant=minbase", suite, str(rootfs), _debian_mirror()],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"debootstrap failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["podman", "import", "-", name], stdin=tar.stdout, capture_output=True,
                                  text=True, env=podman_env, timeout=600)
        tar.wait()
        assert imported.returncode == 0, imported.stderr
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return name


def _stage_context(folder: Path) -> dict[str, str]:
    """A build context with this checkout's files and docker/local/ filled; returns extra build arguments.

    docker/local/ gets the host's versions of the image's dependencies as constraints, the CA
    bundle pip uses here, and the CPU torch wheel when pip can fetch it from its configured sources.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, folder / name)
    shutil.copytree(REPO / "hcsgraph", folder / "hcsgraph", ignore=ignore)
    docker = folder / "docker"
    (docker / "local").mkdir(parents=True)
    for name in ("Containerfile", "Containerfile.dockerignore", "entrypoint.sh", "requirements.py"):
        shutil.copy2(REPO / "docker" / name, docker / name)
    shutil.copy2(REPO / "docker" / "local" / "README.md", docker / "local" / "README.md")
    (docker / "local" / "constraints.txt").write_text("\n".join(_host_pins(folder)) + "\n")
    for bundle in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if bundle and Path(bundle).is_file():
            shutil.copyfile(bundle, docker / "local" / "ca.crt")
            break
    if "torch" not in _extras(folder).split(","):
        return {}
    # The CPU torch wheel of the Containerfile's TORCH_VERSION, when pip can fetch it from its configured
    # sources (a build that is not on PyPI); else the build fetches it from TORCH_INDEX.
    torch = _containerfile_default(folder, "TORCH_VERSION")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    done = subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(docker / "local"),
                           f"torch=={torch}"], capture_output=True, text=True, timeout=900)
    wheels = list((docker / "local").glob("torch-*+cpu-*.whl"))
    if done.returncode == 0 and wheels:
        return {"TORCH_INDEX": ""}
    for wheel in (docker / "local").glob("torch-*.whl"):  # a CUDA build: not for the CPU image
        wheel.unlink()
    return {}


def _containerfile_default(context: Path, name: str) -> str:
    """The default of build argument ``name`` in the staged Containerfile."""
    text = (context / "docker" / "Containerfile").read_text()
    return re.search(rf"^ARG {name}=(\S*)", text, re.MULTILINE).group(1)


def _extras(context: Path) -> str:
    """The extras the image gets: HCSGRAPH_TEST_IMAGE_EXTRAS, else the Containerfile's default."""
    if os.environ.get("HCSGRAPH_TEST_IMAGE_EXTRAS") is not None:
        return os.environ["HCSGRAPH_TEST_IMAGE_EXTRAS"]
    return _containerfile_default(context, "EXTRAS")


def _host_pins(context: Path) -> list[str]:
    """``name==version`` of every distribution installed here that the image's requirements pull in.

    Only that closure, so that installing an unrelated package on the host keeps the image's
    dependency layer cached; torch and what it pulls in are left to the Containerfile (TORCH_VERSION,
    the CPU build), whatever build of torch the host has.
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    listed = subprocess.run([sys.executable, str(context / "docker" / "requirements.py"),
                             str(context / "pyproject.toml"), _extras(context)],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    todo = [Requirement(line).name for line in listed if line.strip()]
    pins: dict[str, str] = {}
    while todo:
        name = canonicalize_name(todo.pop())
        if name in pins or name in ("hcsgraph", "torch"):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        pins[name] = dist.version
        todo.extend(Requirement(req).name for req in dist.requires or [])
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


@pytest.fixture(scope="session")
def image(podman_env: dict[str, str], base_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The hcsgraph image built from this checkout (once per session; podman's layer cache makes rebuilds short)."""
    context = tmp_path_factory.mktemp("image-context")
    args = {"BASE": base_image, **_stage_context(context)}
    if os.environ.get("HCSGRAPH_TEST_IMAGE_EXTRAS") is not None:
        args["EXTRAS"] = os.environ["HCSGRAPH_TEST_IMAGE_EXTRAS"]
    command = ["podman", "build", "--network", "host", "--layers", "-f", "docker/Containerfile", "-t", IMAGE]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    log = context.parent / "image-build.log"
    start = time.monotonic()
    with open(log, "w") as fh:
        done = subprocess.run([*command, "."], cwd=context, stdout=fh, stderr=subprocess.STDOUT, env=podman_env,
                              timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, f"podman build failed; its log ({log}) ends:\n{log.read_text()[-4000:]}"
    print(f"image {IMAGE} built in {time.monotonic() - start:.0f} s")
    shutil.rmtree(context, ignore_errors=True)
    return IMAGE


class Compose:
    """docker/compose.yaml brought up under a project name of its own; ``down`` removes all it started."""

    def __init__(self, env: dict[str, str], image: str, data: Path) -> None:
        self.project = f"hcsgraph-test-{os.getpid()}"
        self.port, self.dashboard = free_port(), free_port()
        self.env = {**env, "HCSGRAPH_IMAGE": image, "HCSGRAPH_DATA": str(data),
                    "HCSGRAPH_SCHEDULER_PORT": str(self.port), "HCSGRAPH_DASHBOARD_PORT": str(self.dashboard),
                    "HCSGRAPH_WORKER_MEMORY": "2GiB"}
        self.command = [*_compose_command(), "-p", self.project, "-f", str(REPO / "docker" / "compose.yaml")]

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """``podman-compose ARGS``; ``run client`` enables the client's profile, as the docs do."""
        profile = ["--profile", "client"] if args[:1] == ("run",) else []
        return subprocess.run([*self.command, *profile, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout)

    def leftovers(self) -> list[str]:
        """Containers and pods of this project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        names = _podman("ps", "-a", "--filter", label, "--format", "{{.Names}}", env=self.env).split()
        pods = _podman("pod", "ps", "--filter", f"name=pod_{self.project}", "--format", "{{.Name}}",
                       env=self.env).split()
        return names + pods

    def down(self) -> None:
        self("down", "-t", "10", timeout=180)
        label = f"label=com.docker.compose.project={self.project}"
        for name in _podman("ps", "-a", "--filter", label, "--format", "{{.ID}}", env=self.env).split():
            _podman("rm", "-f", "-t", "0", name, env=self.env, check_rc=False)
        _podman("pod", "rm", "-f", f"pod_{self.project}", env=self.env, check_rc=False)


@pytest.fixture()
def compose(podman_env: dict[str, str], image: str, reference: Reference) -> Iterator[Compose]:
    """The compose cluster, up with both workers connected; brought down afterwards, nothing left."""
    cluster = Compose(podman_env, image, reference.data)
    try:
        up = cluster("up", "-d")
        assert up.returncode == 0, f"podman-compose up failed: {up.stdout[-2000:]}{up.stderr[-2000:]}"
        _wait_for_workers(cluster, 2)
        yield cluster
    finally:
        cluster.down()
    assert cluster.leftovers() == [], "containers or pods left after down"


def _wait_for_workers(cluster: Compose, n: int, timeout: float = 180) -> None:
    from distributed import Client

    with Client(cluster.address, timeout=timeout) as client:
        client.wait_for_workers(n, timeout=timeout)
        names = sorted(str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values())
    assert names == ["worker-1", "worker-2"], names


def test_compose_cluster_runs_the_pipeline_from_the_host_and_from_a_client_container(
        compose: Compose, reference: Reference, same_as_reference) -> None:
    out = reference.data / "out-compose-host"
    done = run_cli("run", str(PIPELINE_FILE), str(reference.plate), "-o", str(out), "--scheduler", compose.address,
                   "--timeout", "60")
    check(done, "hcsgraph run --scheduler (host client)")
    same_as_reference(out)

    out = reference.data / "out-compose-client"
    done = compose("run", "--rm", "client", "hcsgraph", "run", str(reference.data / "cell_count.py"),
                   str(reference.plate), "-o", str(out), "--scheduler", compose.address, timeout=600)
    check(done, "podman-compose run client hcsgraph run")
    same_as_reference(out)


def test_the_image_runs_scheduler_worker_and_hcsgraph(podman_env: dict[str, str], image: str) -> None:
    def run(*args: str) -> str:
        return _podman("run", "--rm", "--network", "host", image, *args, env=podman_env, timeout=300)

    from hcsgraph import __version__

    assert run("hcsgraph", "--version").split()[-1] == __version__
    assert "dask" in run("scheduler", "--version") and "dask" in run("worker", "--version")
    probe = ("import sys, torch, jax, s3fs; from hcsgraph.memory.libraries import import_library; "
             "from hcsgraph.config import MemoryType; import_library(MemoryType.PYCLESPERANTO); "
             "print('%d.%d' % sys.version_info[:2], torch.__version__, torch.version.cuda)")
    if os.environ.get("HCSGRAPH_TEST_IMAGE_EXTRAS") is None:  # the documented image: torch, jax, OpenCL (PoCL)
        python, torch, cuda = run("python", "-c", probe).split()
        assert python == f"{sys.version_info[0]}.{sys.version_info[1]}"
        assert cuda == "None", f"the CPU image has a CUDA build of torch ({torch}, CUDA {cuda})"
