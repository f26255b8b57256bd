"""The demo's precision choice: bf16 autocast only where the CPU computes bf16 natively."""

import pytest
import torch

from hf_llava.training import precision


def test_auto_picks_fp32_without_probing_when_the_kernels_have_no_bf16(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(precision, "probe_bf16_speedup", lambda: pytest.fail("AVX2 must not need a probe"))
    chosen = precision.choose_precision("auto")
    assert (chosen.name, chosen.bf16) == ("fp32", False)
    assert "AVX2" in chosen.reason and "emulated" in chosen.reason


@pytest.mark.parametrize("speedup, expected", [(4.0, "bf16"), (1.0, "fp32"), (0.03, "fp32")])
def test_auto_follows_the_timed_probe_above_avx2(monkeypatch, speedup, expected):
    # an AVX512 CPU may lack the BF16 extension (or oneDNN may be capped below it): the probe decides
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(precision, "probe_bf16_speedup", lambda: speedup)
    chosen = precision.choose_precision("auto")
    assert chosen.name == expected
    assert f"{speedup:.1f}"[:3] in chosen.reason or f"{speedup:.2f}" in chosen.reason


@pytest.mark.parametrize("requested", ["fp32", "bf16"])
def test_an_explicit_choice_is_kept(monkeypatch, requested):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert precision.choose_precision(requested).name == requested


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="one of auto, fp32, bf16"):
        precision.choose_precision("fp16")


def test_probe_measures_a_positive_ratio():
    assert precision.probe_bf16_speedup(rows=32, inner=32, cols=32) > 0
