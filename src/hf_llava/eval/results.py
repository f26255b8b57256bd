"""results.json / results.md shared by every `hf-llava eval` benchmark.

Design notes
- results.json: `{"benchmark", "model", "settings", ...benchmark-specific fields..., "hub_results"}`. `hub_results`
  holds one entry per headline number, each exactly the keyword arguments of `huggingface_hub.EvalResult`, so a
  model card's model-index is built from it without knowing any benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

VQA = "visual-question-answering"
IMAGE_TEXT_TO_TEXT = "image-text-to-text"


def hub_result(*, task_type: str, dataset_type: str, dataset_name: str, metric_type: str, metric_name: str,
               metric_value: float, task_name: str | None = None, dataset_config: str | None = None,
               dataset_split: str | None = None) -> dict:
    """One `huggingface_hub.EvalResult(**entry)` entry (fields left as None are omitted)."""
    entry = dict(task_type=task_type, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset_name,
                 dataset_config=dataset_config, dataset_split=dataset_split, metric_type=metric_type,
                 metric_name=metric_name, metric_value=metric_value)
    return {k: v for k, v in entry.items() if v is not None}


def write_results(output_dir: str | Path, summary: dict, markdown: str) -> dict[str, Path]:
    """results.json (`summary`) and results.md (`markdown`) in `output_dir`; returns their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: output_dir / name for name in ("results.json", "results.md")}
    paths["results.json"].write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["results.md"].write_text(markdown.rstrip("\n") + "\n", encoding="utf-8")
    return paths
