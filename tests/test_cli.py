"""The `hf-llava` entry point: every subcommand registered, `--help` light enough to never import torch."""

import shutil
import subprocess
import sys

from hf_llava.cli import SUBCOMMANDS


def test_console_script_lists_every_subcommand():
    script = shutil.which("hf-llava")
    command = [script] if script else [sys.executable, "-m", "hf_llava.cli"]
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True)
    for name in ("convert", "build", "demo", "generate-data"):
        assert name in result.stdout
    assert len(SUBCOMMANDS) >= 4


def test_building_the_parser_does_not_import_heavy_libraries():
    code = ("import sys; from hf_llava.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'openai') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
