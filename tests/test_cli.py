"""The `hf-llava` entry point: every subcommand registered, `--help` light enough to never import torch, user errors
as one line with exit code 2 (the traceback only with --debug), internal errors with their traceback."""

import shutil
import subprocess
import sys

import pytest

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


def test_a_user_error_is_one_line_and_exit_code_2_unless_debug(tmp_path, capsys, monkeypatch):
    from hf_llava.cli import main
    from hf_llava.errors import DEBUG_ENV, UserError

    missing = tmp_path / "no-such-checkpoint"
    argv = ["convert", "--from", "llava-hf", str(missing), str(tmp_path / "out")]
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"hf-llava convert: error: {missing}: no such folder"

    with pytest.raises(UserError, match="no such folder"):  # --debug: the traceback comes back
        main(["--debug", *argv])
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(UserError, match="no such folder"):
        main(argv)


def test_an_internal_error_keeps_its_traceback(tmp_path, monkeypatch):
    import hf_llava.convert
    from hf_llava.cli import main

    def broken(*args, **kwargs):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(hf_llava.convert, "from_llava_hf", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["convert", "--from", "llava-hf", str(tmp_path), str(tmp_path / "out")])
