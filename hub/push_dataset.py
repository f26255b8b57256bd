#!/usr/bin/env python
"""Publish a dataset builder's output or a data-engine run to a Hub dataset repo: every config and split as parquet
with the images embedded, the card (with the configs metadata the dataset viewer reads) and the build report.
`python hub/push_dataset.py --help` for the flags; hub/README.md for naming.

Example:
  python datasets_scripts/synthetic_shapes.py --output-dir data/shapes
  python hub/push_dataset.py data/shapes me/synthetic-shapes [--private] [--revision BRANCH] [--dry-run DIR]
"""

from hf_llava.errors import script_main
from hf_llava.hub_scripts import push_dataset_main

if __name__ == "__main__":
    script_main("hub/push_dataset.py", push_dataset_main)
