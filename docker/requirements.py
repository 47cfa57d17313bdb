"""Print the requirements of hcsgraph and the given extras, read from pyproject.toml.

Used by docker/Containerfile to install the dependencies in a layer of their own (cached while
pyproject.toml and docker/local/ stay the same) before hcsgraph itself:

    python3 docker/requirements.py pyproject.toml torch,jax,cle > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: str, extras: str) -> list[str]:
    """Build requirements, dependencies, then each extra's (``hcsgraph[a,b]`` references expanded)."""
    with open(pyproject, "rb") as fh:
        data = tomllib.load(fh)
    project = data["project"]
    optional = project.get("optional-dependencies", {})
    out = list(data.get("build-system", {}).get("requires", [])) + list(project["dependencies"])
    todo = [e.strip() for e in extras.split(",") if e.strip()]
    seen: set[str] = set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            sys.exit(f"unknown extra {extra!r}; pyproject.toml has {', '.join(sorted(optional))}")
        seen.add(extra)
        for req in optional[extra]:
            own = re.fullmatch(rf"{project['name']}\[([^\]]*)\]", req.strip())
            if own:
                todo.extend(e.strip() for e in own.group(1).split(","))
            else:
                out.append(req)
    return out


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")))
