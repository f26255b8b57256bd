"""`LlavaSFTTrainer`: TRL's SFTTrainer with a separate projector learning rate and modality-length grouping.

Design notes
- The main override is `create_optimizer`: with `projector_lr` set it hands the Trainer ready-made parameter groups
  through `optimizer_cls_and_kwargs` (`params` replaces the default groups, the same hook GaLore uses), then lets
  the stock method build the optimizer. So optimizer choice (`optim`), factories, DeepSpeed and the 8-bit
  bitsandbytes handling stay the Trainer's.
- Groups: the rest, then the projector, each split into weight-decay / no-decay by the Trainer's own rule (the
  logged learning rate is the first group's, i.e. `learning_rate`). The projector is found by name
  (`multi_modal_projector`), which also matches PEFT's `modules_to_save` copy of it.
- `group_by_modality_length`: `_get_train_sampler` returns `ModalityLengthGroupedSampler` (see sampler.py) over the
  train dataset's messages; evaluation keeps the Trainer's sampler.
- QLoRA: SFTTrainer casts every trainable parameter of a quantised model to bf16 (the QLoRA paper's choice for the
  adapter). The fully trained `modules_to_save` copies (projector, a tuned tower) are put back in fp32: at LLaVA's
  projector lr (2e-5) most bf16 updates would round away. Autocast (`bf16: true`) runs them in bf16 as usual.

Which loss runs when. One loss (next-token NLL over the positions whose label is not -100, summed, divided by
`num_items_in_batch` = the supervised tokens of the whole optimizer step, else by this batch's count) is computed in
three places; tests/test_loss_paths.py checks that they give the same loss and gradients.

| path                    | code                                      | runs when                                   |
|-------------------------|-------------------------------------------|---------------------------------------------|
| model's `loss_function` | `HfLlavaForConditionalGeneration.forward` | `model(**batch)` with labels, no trainer    |
| TRL's fused LM head     | `SFTTrainer.compute_loss`                 | training on CUDA/XPU, or a loss variant     |
| supervised positions    | `LlavaSFTTrainer.compute_loss` below      | training elsewhere (CPU), plain nll loss    |

Why three, and none removed:
- `loss_function` is the transformers contract (a model given labels returns its loss); the trainers never call it.
- TRL's fused head (the `fused_lm_head=True` forward TRL patches into the model) never builds the (batch, length,
  vocab) logits, and with Triton it scores only the supervised positions. It also owns the loss variants, which the
  supervised-positions path leaves to it: `loss_type` dft, label smoothing, `compute_loss_func`, an MoE aux loss,
  `return_outputs` (`_supervised_positions_loss` says which path a call takes).
- Without Triton (CPU) TRL's head scores every position, to keep tile shapes fixed for compilers, and folds its
  entropy tiles in eager torch: a large share of a CPU step (benchmarks/README.md). The supervised-positions path
  asks the model for logits only at the positions that predict a label (`logits_to_keep`), takes one fp32
  log-softmax for both the loss and the metrics TRL logs (entropy, mean_token_accuracy, num_tokens), and reduces
  and scales for DDP exactly as SFTTrainer does, so a run's loss does not depend on the device it trains on.
"""

import torch
from trl import SFTTrainer

from .model import PROJECTOR
from .sampler import ModalityLengthGroupedSampler, modality_lengths


class LlavaSFTTrainer(SFTTrainer):
    def __init__(self, *args, projector_lr: float | None = None, group_by_modality_length: bool = False,
                 length_grouping_megabatches: int = 1, **kwargs):
        self.projector_lr = projector_lr
        self.group_by_modality_length = group_by_modality_length
        self.length_grouping_megabatches = length_grouping_megabatches
        super().__init__(*args, **kwargs)
        if getattr(self.model, "is_loaded_in_4bit", False):
            for name, param in self.model.named_parameters():
                if param.requires_grad and ".modules_to_save." in name:
                    param.data = param.data.float()

    def parameter_groups(self, model) -> list[dict]:
        decay = set(self.get_decay_parameter_names(model))
        groups = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            is_projector = PROJECTOR in name
            key = (is_projector, name in decay)
            if key not in groups:
                groups[key] = {"params": [], "weight_decay": self.args.weight_decay if key[1] else 0.0}
                if is_projector:
                    groups[key]["lr"] = self.projector_lr
            groups[key]["params"].append(param)
        return [groups[key] for key in sorted(groups)]  # the LLM's groups first: logs report the first group's lr

    def _get_train_sampler(self, train_dataset=None):
        if not self.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        return ModalityLengthGroupedSampler(
            modality_lengths(dataset, self.processing_class.image_seq_length), batch_size=self.args.train_batch_size,
            world_size=max(1, self.args.world_size), rank=self.args.process_index,
            grad_accum=self.args.gradient_accumulation_steps, seed=self.args.seed,
            megabatches=self.length_grouping_megabatches,
        )

    def create_optimizer(self, model=None):
        if self.projector_lr is not None and self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer_cls_and_kwargs = (optimizer_cls,
                                             {**optimizer_kwargs, "params": self.parameter_groups(opt_model)})
        return super().create_optimizer(model)

    def _supervised_positions_loss(self) -> bool:
        """Whether `compute_loss` takes the supervised-positions path (see the design notes)."""
        return (self.accelerator.device.type not in ("cuda", "xpu") and self.args.loss_type == "nll"
                and self.label_smoother is None and self.compute_loss_func is None and not self.aux_loss_enabled)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or not self._supervised_positions_loss():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        targets = inputs["labels"][:, 1:]  # position t predicts token t + 1
        positions = (targets != -100).any(0).nonzero().squeeze(-1)
        model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        logits = model(**model_inputs, use_cache=False, logits_to_keep=positions).logits.float()
        targets = targets[:, positions]
        mask = targets != -100
        log_probs = logits.log_softmax(-1)
        token_log_probs = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        num_tokens = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -token_log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as SFTTrainer: DDP averages
        self._log_token_metrics(log_probs.detach(), logits.detach(), targets, mask, inputs)
        return loss

    def _log_token_metrics(self, log_probs, logits, targets, mask, inputs) -> None:
        """SFTTrainer's entropy / mean_token_accuracy / num_tokens metrics, over the supervised positions."""
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        num_valid = gather(mask.sum()).sum()
        entropy_sum = gather((entropy * mask).sum()).sum()
        num_correct = gather(((logits.argmax(-1) == targets) & mask).sum()).sum()
        self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
