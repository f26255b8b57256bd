"""The hub/ scripts' command lines: each explains itself with --help (the flags every publishing script shares), and
runs from the checkout as a plain script."""

import subprocess
import sys
from pathlib import Path

import pytest

from hf_llava.hub_scripts import collection_main, push_dataset_main, push_model_main, reference_card_main

ROOT = Path(__file__).resolve().parents[1]
SHARED = ["--private", "--revision", "--dry-run", "--token"]


@pytest.mark.parametrize("main, flags", [
    (push_model_main, ["CHECKPOINT", "REPO_ID", "--eval-results", "--license", "--also-llava-hf", "--datasets"]),
    (push_dataset_main, ["FOLDER", "REPO_ID", "configs metadata"]),
    (collection_main, ["MODEL_REPO", "--item", "--title"]),
])
def test_help_names_every_flag(main, flags, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in [*flags, *SHARED]:
        assert flag in text, flag


def test_reference_card_help(capsys):
    with pytest.raises(SystemExit):
        reference_card_main(["--help"])
    assert "DEMO_DIR" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["push_model.py", "push_dataset.py", "collection.py", "reference_card.py"])
def test_scripts_run_from_the_checkout(script):
    result = subprocess.run([sys.executable, str(ROOT / "hub" / script), "--help"], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0 and f"hub/{script}" in result.stdout, result.stderr
