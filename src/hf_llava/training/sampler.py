"""Modality-length grouping (`group_by_modality_length`): batches of image rows or of text-only rows, never mixed, and
of similar lengths within a modality, as the original LLaVA's `LengthGroupedSampler(group_by_modality=True)`.

Design notes
- Lengths follow LLaVA's convention: words of the conversation + `image_seq_length` per image, positive for rows
  with images and negative for text-only rows. They are read from `messages` only (images are never decoded), so
  the same code serves rows with `images` and feature-cached rows.
- Per epoch (seeded by seed + epoch, identical on every rank): each modality is shuffled and cut into megabatches
  of batch x world_size x grad_accum x `megabatches` rows; a megabatch is sorted by length and cut into contiguous
  micro-batches, grouped in rounds of one micro-batch per rank. The rounds of both modalities are then shuffled
  together. `megabatches=1` is the original's pool; a larger pool (transformers' `group_by_length` sorts up to 50
  batches together) keeps rare long rows (a few long conversations in a mixture of short VQA rows) out of the short
  rows' batches, which would otherwise be padded to their length.
  A modality's last, partial megabatch is cut into as many near-equal micro-batches as full ones would need (a
  multiple of world_size), so every row is used exactly once per epoch and no micro-batch mixes modalities. (The
  original instead merged both modalities' leftovers into one mixed batch.) Only where a leftover has fewer rows
  than there are ranks are some of its rows repeated, as DistributedSampler pads.
- It yields whole micro-batches (variable size) and is rank-aware, which the Trainer supports for its own
  `BatchRebalanceSampler` only: passed as `batch_sampler`, not re-sharded by accelerate. So this class derives
  from it for that dispatch (in `LlavaSFTTrainer._get_train_sampler`) and replaces all of its behaviour.
"""

import math
import random

from torch.utils.data import Sampler
from transformers.trainer_pt_utils import BatchRebalanceSampler


def modality_lengths(dataset, image_seq_length: int) -> list[int]:
    """LLaVA's modality lengths: words + image tokens, negative for text-only rows."""
    lengths = []
    for batch in dataset.select_columns(["messages"]).iter(batch_size=1000):
        for messages in batch["messages"]:
            blocks = [block for message in messages for block in message["content"]]
            images = sum(block["type"] == "image" for block in blocks)
            words = sum(len((block.get("text") or "").split()) for block in blocks if block["type"] == "text")
            lengths.append(words + images * image_seq_length if images else -max(words, 1))
    return lengths


class ModalityLengthGroupedSampler(BatchRebalanceSampler):
    """Yields this rank's micro-batches (lists of row indices), each of one modality and of similar lengths."""

    def __init__(self, lengths: list[int], batch_size: int, world_size: int = 1, rank: int = 0, grad_accum: int = 1,
                 seed: int = 0, megabatches: int = 1):
        Sampler.__init__(self)  # BatchRebalanceSampler is only the Trainer's marker for a rank-aware batch sampler
        if any(length == 0 for length in lengths):
            raise ValueError("modality lengths must be non-zero (positive: with images, negative: text-only)")
        self.lengths = list(lengths)
        self.batch_size, self.world_size, self.rank, self.seed = batch_size, world_size, rank, seed
        if megabatches < 1:
            raise ValueError(f"megabatches must be >= 1, got {megabatches}")
        self.megabatch = batch_size * world_size * grad_accum * megabatches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _modalities(self) -> list[list[int]]:
        return [[i for i, n in enumerate(self.lengths) if n > 0], [i for i, n in enumerate(self.lengths) if n < 0]]

    def _num_batches(self, rows: int) -> int:
        """Micro-batches a megabatch of `rows` rows is cut into: enough for `batch_size`, a multiple of world_size."""
        return math.ceil(rows / (self.batch_size * self.world_size)) * self.world_size

    def rounds(self) -> list[list[list[int]]]:
        """This epoch's rounds: each a list of world_size micro-batches (one per rank)."""
        rng = random.Random(self.seed + self.epoch)
        rounds = []
        for rows in self._modalities():
            rng.shuffle(rows)
            for start in range(0, len(rows), self.megabatch):
                mega = sorted(rows[start:start + self.megabatch], key=lambda i: -abs(self.lengths[i]))
                if len(mega) < self.world_size:
                    mega = (mega * self.world_size)[:self.world_size]
                count = self._num_batches(len(mega))
                sizes = [len(mega) // count + (k < len(mega) % count) for k in range(count)]
                offsets = [sum(sizes[:k]) for k in range(count + 1)]
                batches = [mega[offsets[k]:offsets[k + 1]] for k in range(count)]
                rounds += [batches[k:k + self.world_size] for k in range(0, count, self.world_size)]
        rng.shuffle(rounds)
        return rounds

    def __iter__(self):
        for batches in self.rounds():
            yield batches[self.rank]

    def __len__(self) -> int:
        total = 0
        for rows in map(len, self._modalities()):
            full, rest = divmod(rows, self.megabatch)
            total += full * self._num_batches(self.megabatch) + (self._num_batches(rest) if rest else 0)
        return total // self.world_size
