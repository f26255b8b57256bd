"""`cache_image_features`: a run on cached vision features gives the same losses and projector as the run on pixels,
without ever running the vision tower during training; the cache is reused while nothing it depends on changes; a
trainable tower is refused."""

import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import TrainerCallback

from hf_llava.data.schema import features
from hf_llava.testing import random_image
from hf_llava.training import LlavaArguments, cache_image_features, load_mixture

sys.path.insert(0, str(Path(__file__).parent))
from test_training import colour_rows, losses, sft, stage1_args  # noqa: E402
from tiny_checkpoints import save_clip_vision, save_llama  # noqa: E402


def mixed_rows() -> list[dict]:
    """Ten one-image rows, a two-image row and a text-only row: cache ids must follow rows and images in order."""
    two = {"id": "two", "images": [random_image(20), random_image(21)], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]}]}
    text = {"id": "text", "images": [], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}]}
    return colour_rows(10) + [two, text]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_parts")
    datasets.Dataset.from_list(mixed_rows(), features=features()).save_to_disk(str(root / "data"))
    return {"tower": str(save_clip_vision(root / "tower")), "llm": str(save_llama(root / "llm")),
            "data": str(root / "data")}


class TowerCalls(TrainerCallback):
    """Counts vision-tower forwards during training."""

    calls = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.model.vision_tower.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def run(parts, out, *extra):
    calls = TowerCalls()
    # stage 2 (projector + LLM, tower frozen): its mixtures may hold text-only rows, which stage 1 refuses.
    # Plain SGD, not AdamW: the cache is built from other image batches than the training batches, so its features
    # may differ from the tower's in the last bit (how much depends on the CPU's matmul kernels), and Adam's step
    # lr * m / (sqrt(v) + eps) has a slope of up to lr / eps in the gradient where a gradient is near zero, which
    # turns such rounding into 1e-5-sized parameter differences after a few steps. SGD's step is linear in the
    # gradient, so both runs must agree to rounding: what the comparison below tests is the cache, not the optimizer.
    trainer = sft.main(stage1_args(parts, out, "--max_steps", "3", "--stage", "2", "--optim", "sgd", *extra),
                       callbacks=[calls])
    return trainer, calls.calls


@pytest.fixture(scope="module")
def runs(parts, tmp_path_factory):
    pixels = run(parts, tmp_path_factory.mktemp("pixels"))
    cached = run(parts, tmp_path_factory.mktemp("cached"), "--cache_image_features", "true")
    return {"pixels": pixels, "cached": cached}


def test_cached_features_give_the_same_training_without_running_the_tower(runs):
    (pixels, pixel_calls), (cached, cached_calls) = runs["pixels"], runs["cached"]
    assert pixel_calls > 0 and cached_calls == 0
    assert len(losses(cached)) == 3 and losses(pixels)[-1] < losses(pixels)[0]  # it trained
    assert losses(cached) == pytest.approx(losses(pixels))
    trained = {n: p for n, p in pixels.model.named_parameters() if p.requires_grad}
    assert any("multi_modal_projector" in name for name in trained)
    for name, param in cached.model.named_parameters():
        if name in trained:
            torch.testing.assert_close(param, trained[name])


def test_cache_holds_every_image_in_row_order_and_is_reused(parts, runs):
    trainer, _ = runs["cached"]
    model, processor = trainer.model, trainer.processing_class
    dataset = load_mixture(LlavaArguments(datasets=[parts["data"]]).datasets)
    calls = []
    model.model.vision_tower.register_forward_hook(lambda *_: calls.append(1))
    cached_dataset, cache = cache_image_features(model, processor, dataset, trainer.args)
    assert not calls  # same data, tower and processing: the file is reused
    assert "images" not in cached_dataset.column_names
    assert cached_dataset["image_feature_ids"] == [[i] for i in range(10)] + [[10, 11], []]
    assert len(cache) == 12
    two_images = dataset[10]["images"]
    pixel_values = processor(text=[processor.image_token] * 2, images=two_images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(cache[[10, 11]], model.model.get_vision_features(pixel_values))

    with torch.no_grad():
        model.model.vision_tower.embeddings.patch_embedding.weight.mul_(2)  # another tower: rebuilt
    cache_image_features(model, processor, dataset, trainer.args)
    assert calls


def test_cache_refuses_a_trainable_tower():
    with pytest.raises(ValueError, match="frozen vision tower"):
        LlavaArguments(cache_image_features=True, tune_vision_tower=True)


def test_cache_refuses_zero3_whose_tower_is_partitioned():
    pytest.importorskip("deepspeed")
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    zero3 = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}})  # while it lives, transformers sees ZeRO-3 on
    try:
        assert zero3.is_zero3()
        with pytest.raises(ValueError, match="ZeRO-3.*zero2.yaml"):
            cache_image_features(model=None, processor=None, dataset=None, training_args=None)
    finally:
        unset_hf_deepspeed_config()
