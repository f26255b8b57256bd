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

