"""GPT-assisted instruction generation (LLaVA's data engine).

COCO captions + boxes -> symbolic text context -> one of three prompt types (conversation, detail, complex)
-> any OpenAI-compatible endpoint -> parsed, validated conversations in the canonical schema.

Module map (one concern each):
- `prompts`: versioned plain-text prompt sets in `prompts/<version>/` and the chat messages built from them.
- `parsing`: teacher output -> question/answer turns (tolerant of format variations).
- `validate`: reject reasons (empty, unparseable, leaks of captions/boxes/coordinates, too short).
- `cache`: the durable fsync'd JSONL cache, the single source of truth for what has been paid for.
- `pricing`: price table (overridable) and the cost budget used by `--max-cost`.
- `engine`: live async requests with bounded concurrency; `batch`: the OpenAI Batch API path.
- `export`: cache -> canonical dataset, `llava_instruct.json`, rejects, stats; `hub`: push with a card.
- `pipeline`: the whole `hf-llava generate-data` run; `cli`: its argparse front end.
"""

TYPES = ("conversation", "detail", "complex")
