"""Answer-position probes: the probe itself, the hidden states it reads, and `hf-llava eval probe`."""

import json

import pytest
import torch

from hf_llava.cli import main as cli_main
from hf_llava.data.shapes import QUESTION_TYPES
from hf_llava.eval.probe import answer_states, probe_accuracy
from hf_llava.eval.shapes import first_per_type
from hf_llava.testing import random_image, tiny_llava

from test_eval_shapes import vqa_row


def test_probe_reads_a_linearly_encoded_answer_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=generator)
    labels = ["yes" if v > 0 else "no" for v in x[:, 3]]  # the answer is the sign of one feature, scaled small:
    x[:, 3] *= 1e-3                                       # standardisation must find it anyway
    assert probe_accuracy(x[:300], labels[:300], x[300:], labels[300:]) > 0.95
    noise = torch.randn(400, 16, generator=generator)
    assert probe_accuracy(noise[:300], labels[:300], noise[300:], labels[300:]) < 0.75
    assert probe_accuracy(x[:300], labels[:300], x[300:], ["maybe"] * 100) == 0  # unseen answers count as wrong


def test_answer_states_are_each_rows_last_prompt_position_whatever_the_padding():
    model, processor = tiny_llava(seed=3, chat_template="chatml")
    rows = [vqa_row("color", "red", q, random_image(k)) for k, q in enumerate(
        ["What color?", "Look closely at the picture: what colour is the shape in the upper left corner?", "Where?"])]
    layers = [0, 1, model.config.text_config.num_hidden_layers]
    batched = answer_states(model, processor, rows, layers, batch_size=3)
    assert batched.shape == (3, 3, model.config.text_config.hidden_size)
    for k, row in enumerate(rows):
        torch.testing.assert_close(batched[k], answer_states(model, processor, [row], layers)[0], atol=1e-4,
                                   rtol=1e-4)
    same_question = [vqa_row("color", "red", "What color?", random_image(seed)) for seed in (5, 6)]
    real = answer_states(model, processor, same_question, layers)
    blank = answer_states(model, processor, same_question, layers, blank_images=True)
    assert not torch.allclose(real[0, -1], real[1, -1])  # the last layer sees the picture...
    torch.testing.assert_close(blank[0], blank[1])  # ...and blank images make the two rows one question


def test_first_per_type_keeps_order_and_limit():
    assert first_per_type(["color", "shape", "color", "color", "shape"], 2) == [0, 1, 2, 4]


def test_eval_probe_cli_fits_a_probe_per_type_and_layer(tmp_path, capsys):
    from hf_llava.data.builder import build_to_disk, load_builder_script

    builder = load_builder_script("datasets_scripts/synthetic_shapes.py").SyntheticShapes
    build_to_disk(builder, str(tmp_path / "shapes"), configs=["vqa"], num_images=6, num_eval_images=2)
    model, processor = tiny_llava(seed=3, chat_template="chatml")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "probe"
    args = ["eval", "probe", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "shapes"),
            "--train-questions", "4", "--output-dir", str(out)]
    assert cli_main([*args, "--layers", "0", "2", "--blank-image"]) == 0
    probes = json.loads((out / "probe.json").read_text())["probes"]
    assert list(probes) == list(QUESTION_TYPES)
    for entry in probes.values():
        assert entry["train"] == 4 and entry["test"] == 2
        assert set(entry["layers"]) == set(entry["blank"]) == {"0", "2"}
        assert all(0 <= acc <= 1 for acc in [*entry["layers"].values(), *entry["blank"].values()])
    assert "| existence | 4 / 2 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="layers must lie in"):
        cli_main([*args, "--layers", "99"])
