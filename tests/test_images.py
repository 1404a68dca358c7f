"""The image build check that runs without a Docker engine: hadolint (pinned in
requirements-dev.lock) on each Dockerfile, and the properties the cluster relies on read
from the Dockerfiles themselves."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def _final_stage(path: Path) -> list[tuple[str, str]]:
    steps = _instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_both_images_exist():
    assert {p.name for p in DOCKERFILES} == {"runtime.Dockerfile", "agent.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_non_root_user_from_a_pinned_base(dockerfile):
    steps = _instructions(dockerfile)
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    for word, rest in steps:
        if word == "FROM":
            image = rest.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and re.search(r"\d", tag), image
    users = [rest for word, rest in _final_stage(dockerfile) if word == "USER"]
    runtime_user = users[-1] if users else None
    assert runtime_user is not None and runtime_user.split(":")[0] not in {"0", "root"}


def test_runtime_image_installs_the_lock_and_ships_only_the_venv():
    steps = _instructions(ROOT / "images" / "runtime.Dockerfile")
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip install -r requirements.lock" in runs and "pip check" in runs
    copies = [rest for word, rest in steps if word == "COPY"]
    for rest in copies:
        if rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), source
    final_copies = [rest for word, rest in _final_stage(ROOT / "images" / "runtime.Dockerfile")]
    assert any(r.startswith("--from=build /opt/venv") for r in final_copies)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "manifests/overlays/*/secrets" in ignored


def test_agent_image_starts_the_agent():
    steps = _instructions(ROOT / "images" / "agent.Dockerfile")
    (entrypoint,) = [json.loads(rest) for word, rest in steps if word == "ENTRYPOINT"]
    assert entrypoint == ["fedpipe", "agent"]


def test_every_package_folder_is_installed_by_a_non_editable_install():
    """The image installs fedpipe as a wheel (`pip install --no-deps .`), which holds only the
    packages setup.cfg lists; an editable install hides a missing one (fedpipe.config was)."""
    listed = set()
    in_packages = False
    for line in (ROOT / "setup.cfg").read_text().splitlines():
        if line.startswith("packages ="):
            in_packages = True
        elif in_packages and line.startswith("    "):
            listed.add(line.strip())
        elif in_packages:
            break
    roots = {"sdk/fedpipe": "fedpipe", "components": "fedpipe.components"}
    roots["pipelines"] = "fedpipe.pipelines"
    folders = set()
    for folder, package in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            folders.add(".".join((package, *relative)))
    assert folders - listed == set()


def test_build_script_keeps_image_storage_out_of_the_repo():
    result = subprocess.run(
        ["bash", str(ROOT / "images" / "build.sh")],
        env={"PATH": "/usr/bin:/bin", "WORK": str(ROOT / "imgbuild")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "outside" in result.stderr
    assert not (ROOT / "imgbuild").exists()
