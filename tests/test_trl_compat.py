"""HfLlava trains under TRL 1.16's SFTTrainer, whose fused loss runs `model.base_model(...)` + the output embeddings."""

import datasets
import torch
from trl import SFTConfig, SFTTrainer

from hf_llava.testing import random_image, tiny_llava


def make_collator(processor):
    """Minimal collator for this test (the package's MultimodalCollator is tested on its own)."""

    def collate(rows):
        conversations = [row["messages"] for row in rows]
        batch = processor.apply_chat_template(
            conversations, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt",
            processor_kwargs={"images": [row["images"] for row in rows], "padding": True},
        )
        labels = batch["input_ids"].masked_fill(~batch.pop("assistant_masks").bool(), -100)
        return {**batch, "labels": labels}

    return collate


def test_sft_trainer_steps_and_fused_loss_equal_the_model_loss(tmp_path):
    model, processor = tiny_llava(seed=11)
    colours = ["red", "blue", "green", "yellow"]
    rows = [
        {
            "images": [random_image(i)],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": f"It is {colours[i % 4]}."}]},
            ],
        }
        for i in range(8)
    ]
    dataset = datasets.Dataset.from_list(rows)
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=4, learning_rate=3e-3,
        use_cpu=True, bf16=False, remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None, report_to=[], logging_steps=1, save_strategy="no", seed=0,
    )
    collate = make_collator(processor)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                         processing_class=processor)

    batch = collate([dataset[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        trainer_loss = trainer.compute_loss(model, dict(batch))
        model_loss = model(**batch).loss
    torch.testing.assert_close(trainer_loss, model_loss, atol=1e-5, rtol=1e-5)

    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 12
    assert sum(losses[-3:]) < 0.75 * sum(losses[:3])  # it learns the answers (seeded run: 5.9 -> 4.0)


def test_cpu_supervised_positions_loss_equals_trls_fused_loss(tmp_path):
    # LlavaSFTTrainer computes the loss from logits at supervised positions only on CPU (TRL's fused head scores
    # every position there); loss, gradients and logged metrics must be TRL's
    from hf_llava import MultimodalCollator
    from hf_llava.training import LlavaSFTTrainer

    model, processor = tiny_llava(seed=5)
    turn = [{"role": "user", "content": [{"type": "text", "text": "And now?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Still blue, I think."}]}]
    rows = [{"id": str(i), "images": [random_image(i)] if i % 3 else [], "messages": [
        {"role": "user", "content": ([{"type": "image", "text": None}] if i % 3 else [])
         + [{"type": "text", "text": "Which colour is it" + " really" * i + "?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"It is colour {i}."}]}] + turn * (i % 2)}
        for i in range(6)]
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, remove_unused_columns=False,
                     dataset_kwargs={"skip_prepare_dataset": True}, report_to=[], max_length=None)
    trainer = LlavaSFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows[:1]),
                              data_collator=MultimodalCollator(processor), processing_class=processor)
    assert trainer._supervised_positions_loss()
    batch = MultimodalCollator(processor)(rows)
    model.train()  # the metrics go to the "train" log
    results = []
    for compute_loss in (SFTTrainer.compute_loss, LlavaSFTTrainer.compute_loss):
        model.zero_grad()
        trainer._metrics["train"].clear()
        loss = compute_loss(trainer, model, dict(batch), num_items_in_batch=torch.tensor(23))
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, {k: v[-1] for k, v in trainer._metrics["train"].items()}))
    (trl_loss, trl_grads, trl_metrics), (loss, grads, metrics) = results
    torch.testing.assert_close(loss, trl_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == trl_grads.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads[name], trl_grads[name], atol=1e-5, rtol=1e-4)
    assert metrics.keys() == trl_metrics.keys() >= {"entropy", "mean_token_accuracy"}
    assert abs(metrics["entropy"] - trl_metrics["entropy"]) < 1e-4
    assert metrics["mean_token_accuracy"] == trl_metrics["mean_token_accuracy"]
