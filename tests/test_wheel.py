"""The package on its own: a wheel built from this checkout, installed into an empty folder, runs `hf-llava demo
--quick` from an unrelated directory. The recipes, the data builder and the tiny --quick parts must all come from
the installed package; the checkout is neither the working directory nor importable."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_installed_wheel_runs_the_quick_demo_outside_the_checkout(tmp_path):
    # built from a copy of what the wheel is made of: an in-tree build would reuse a stale build/ folder, which can
    # hold modules since removed from src/
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "wheels"), str(source)])
    (wheel,) = (tmp_path / "wheels").glob("hf_llava-*.whl")
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install's path to the checkout's src/
    where = run([sys.executable, "-c", "import hf_llava; print(hf_llava.__file__)"], cwd=elsewhere, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site)
    out = tmp_path / "demo"
    demo = run([sys.executable, "-m", "hf_llava.cli", "demo", "--quick", "--output-dir", str(out)], cwd=elsewhere,
               env=env, timeout=900)
    assert (out / "report.md").is_file(), demo.stdout[-2000:]
    assert "[5/5] eval: done" in demo.stdout
