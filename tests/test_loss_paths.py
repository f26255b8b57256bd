"""The three places a training loss is computed (the table in hf_llava/training/trainer.py says which runs when) give
the same loss and gradients on one tiny model and batch: the model's own `loss_function`, TRL's fused LM head
(`SFTTrainer.compute_loss`) and `LlavaSFTTrainer`'s supervised-positions path, which also logs TRL's metrics."""

import datasets
import pytest
import torch
from trl import SFTConfig, SFTTrainer

from hf_llava import MultimodalCollator
from hf_llava.testing import random_image, tiny_llava
from hf_llava.training import LlavaSFTTrainer


def rows() -> list[dict]:
    """Image and text-only rows, one and two turns, of different lengths: padding and unsupervised positions vary."""
    turn = [{"role": "user", "content": [{"type": "text", "text": "And now?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Still blue, I think."}]}]
    return [{"id": str(i), "images": [random_image(i)] if i % 3 else [], "messages": [
        {"role": "user", "content": ([{"type": "image", "text": None}] if i % 3 else [])
         + [{"type": "text", "text": "Which colour is it" + " really" * i + "?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"It is colour {i}."}]}] + turn * (i % 2)}
        for i in range(6)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, processor = tiny_llava(seed=5)
    args = SFTConfig(output_dir=str(tmp_path_factory.mktemp("loss_paths")), use_cpu=True, bf16=False,
                     remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, report_to=[],
                     max_length=None)
    trainer = LlavaSFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows()[:1]),
                              data_collator=MultimodalCollator(processor), processing_class=processor)
    model.train()  # the trainers log their metrics under "train"
    return trainer, MultimodalCollator(processor)(rows())


PATHS = {
    "model loss_function": lambda trainer, batch, n: trainer.model(**batch, num_items_in_batch=n).loss,
    "TRL fused LM head": lambda trainer, batch, n: SFTTrainer.compute_loss(trainer, trainer.model, batch,
                                                                           num_items_in_batch=n),
    "supervised positions": lambda trainer, batch, n: LlavaSFTTrainer.compute_loss(trainer, trainer.model, batch,
                                                                                   num_items_in_batch=n),
}


def run(path: str, trainer, batch, num_items_in_batch):
    """Loss, gradients by parameter name and the metrics the path logged."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    trainer._metrics["train"].clear()
    loss = PATHS[path](trainer, dict(batch), num_items_in_batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads, {key: values[-1] for key, values in trainer._metrics["train"].items()}


@pytest.mark.parametrize("accumulated", [False, True], ids=["batch mean", "sum over accumulated tokens"])
def test_every_loss_path_gives_the_same_loss_and_gradients(setup, accumulated):
    trainer, batch = setup
    assert trainer._supervised_positions_loss()  # CPU, plain NLL: the trainer's own path is the one training uses
    supervised = int((batch["labels"][:, 1:] != -100).sum())
    # the Trainer passes num_items_in_batch = the supervised tokens of every micro-batch of one optimizer step
    num_items_in_batch = torch.tensor(3 * supervised) if accumulated else None
    results = {path: run(path, trainer, batch, num_items_in_batch) for path in PATHS}
    reference_loss, reference_grads, _ = results["model loss_function"]
    assert reference_grads and any("multi_modal_projector" in name for name in reference_grads)
    for path, (loss, grads, _) in results.items():
        torch.testing.assert_close(loss, reference_loss, atol=1e-6, rtol=1e-5, msg=path)
        assert grads.keys() == reference_grads.keys(), path
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], atol=1e-6, rtol=1e-4, msg=f"{path}: {name}")
    if accumulated:
        unscaled = run("model loss_function", trainer, batch, None)[0]
        torch.testing.assert_close(reference_loss * 3, unscaled)  # the count really reached the loss

    trl_metrics, metrics = results["TRL fused LM head"][2], results["supervised positions"][2]
    assert metrics.keys() == trl_metrics.keys() >= {"entropy", "mean_token_accuracy"}
    assert metrics["entropy"] == pytest.approx(trl_metrics["entropy"], abs=1e-4)
    assert metrics["mean_token_accuracy"] == trl_metrics["mean_token_accuracy"]


@pytest.mark.parametrize("setting, value", [("loss_type", "dft"), ("label_smoothing_factor", 0.1)])
def test_what_the_supervised_positions_path_cannot_do_goes_to_trl(setup, monkeypatch, setting, value):
    trainer, batch = setup
    monkeypatch.setattr(trainer.args, setting, value)
    if setting == "label_smoothing_factor":  # the Trainer builds its label smoother from the setting at init
        from transformers.trainer_pt_utils import LabelSmoother

        monkeypatch.setattr(trainer, "label_smoother", LabelSmoother(epsilon=value))
    assert not trainer._supervised_positions_loss()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    plain = PATHS["model loss_function"](trainer, dict(batch), None)
    assert not torch.allclose(loss, plain)  # TRL's path applied the setting
