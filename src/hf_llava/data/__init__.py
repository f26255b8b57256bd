"""Datasets: the canonical row (`schema`), importers from real formats, and the pieces the builders in
`datasets_scripts/` share. Submodules are imported on demand (`from hf_llava.data.schema import features`);
only the dependency-free API is re-exported here, so importing this package does not import `datasets`
(which reads HF_DATASETS_CACHE at import time).
"""

from .coco import CocoImage, load_coco, normalized_box, symbolic_context
from .errors import BadRecordError, SkipReport

__all__ = ["BadRecordError", "CocoImage", "SkipReport", "load_coco", "normalized_box", "symbolic_context"]
