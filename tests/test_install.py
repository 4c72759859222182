"""A normal (non-editable) install carries the presets and every module, and runs from any working directory."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("JUKEBOX_PL_CONFIGS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_installed_package_finds_its_presets(tmp_path):
    # Build from a copy, so that setuptools' in-tree build/ and egg-info stay out of the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("src", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*pip, str(target), str(source)], check=True, capture_output=True, timeout=300)

    installed = {p.relative_to(target / "jukebox_pl") for p in (target / "jukebox_pl").rglob("*") if p.is_file()}
    package = ROOT / "src" / "jukebox_pl"
    modules = {p.relative_to(package) for p in package.rglob("*.py")}
    assert not modules - installed, f"modules missing from the install: {sorted(map(str, modules - installed))}"
    presets = {Path("configs") / p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml")}
    assert not presets - installed, f"presets missing from the install: {sorted(map(str, presets - installed))}"
    assert Path("py.typed") in installed

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import jukebox_pl\n"
        "from jukebox_pl.config import load_config\n"
        "from jukebox_pl.config.loader import configs_dir\n"
        "print(jukebox_pl.__file__)\n"
        "print(configs_dir())\n"
        "print(load_config('tiny', ['prior.top.arch=tiny_prior']).prior.top.n_ctx)\n"
    )
    proc = run_installed(target, elsewhere, "-c", probe)
    assert proc.returncode == 0, proc.stderr
    module_file, configs, n_ctx = proc.stdout.split()
    assert Path(module_file).is_relative_to(target)
    assert Path(configs) == target / "jukebox_pl" / "configs"
    assert n_ctx == "512"  # from configs/priors/tiny_prior.yaml

    proc = run_installed(target, elsewhere, "-m", "jukebox_pl", "config", "--preset", "tiny")
    assert proc.returncode == 0, proc.stderr
    assert "preset: tiny" in proc.stdout and "sample_rate: 22050" in proc.stdout
    assert "lyrics: encoder" in proc.stdout  # the top prior's architecture file was merged
