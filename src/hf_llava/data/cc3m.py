"""CC3M-style (image, caption) pairs -> LLaVA's concept-balanced subset -> stage-1 rows.

The paper's filter (CC3M -> 595K): extract noun phrases per caption; drop phrases seen in fewer than 3 captions;
then, from the rarest remaining phrase upward (ties by phrase text, for determinism), add the captions that
contain it to the pool, at most 100 of them per phrase, sampled with a seeded RNG. A phrase counts once per
caption. The extractor is injected (a function from a batch of captions to their phrase lists), so the algorithm
is testable without spaCy; `spacy_noun_phrases` is the extractor for real use.
"""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tqdm.auto import tqdm

from .errors import BadRecordError, SkipReport
from .images import read_image
from .instructions import BRIEF_DESCRIPTION, pick
from .jsonstream import iter_json_records
from .schema import assistant_message, user_message

Extractor = Callable[[list[str]], Iterable[Iterable[str]]]
SPACY_HELP = ("spaCy does the noun phrases: pip install spacy && python -m spacy download en_core_web_sm "
              "(any English pipeline with a parser works; pick it with --spacy-model)")


@dataclass
class Pair:
    id: str
    image: str
    caption: str


def read_pairs(path: str | os.PathLike, report: SkipReport | None = None) -> list[Pair]:
    """Read (id, image, caption) pairs from
    - a TSV with `caption<TAB>image` per line (no header; CC3M's own column order, with the URL replaced by the
      downloaded file's relative path), id = image file stem;
    - a JSON/JSONL list of `{"image", "caption", "id"?}` (LLaVA-CC3M-Pretrain-595K's metadata.json), or of LLaVA
      conversation records (its chat.json: the caption is the last `gpt` turn)."""
    report = report or SkipReport()
    path = str(path)
    pairs = []
    if path.endswith(".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            for lineno, cols in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
                if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
                    report.bad(BadRecordError(path, f"line {lineno}", f"expected 'caption<TAB>image', got {cols!r}",
                                              "malformed record"))
                    continue
                pairs.append(Pair(os.path.splitext(os.path.basename(cols[1]))[0], cols[1].strip(), cols[0].strip()))
        return pairs
    for index, rec in enumerate(iter_json_records(path)):
        try:
            if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
                raise BadRecordError(path, f"#{index}", "expected an object with an 'image' path", "malformed record")
            caption = rec.get("caption")
            if caption is None and isinstance(rec.get("conversations"), list):
                gpt = [t.get("value") for t in rec["conversations"] if isinstance(t, dict) and t.get("from") == "gpt"]
                caption = gpt[-1] if gpt else None
            if not isinstance(caption, str) or not caption.strip():
                raise BadRecordError(path, f"#{index}", "missing or empty caption", "missing caption")
        except BadRecordError as e:
            report.bad(e)
            continue
        rid = rec.get("id", os.path.splitext(os.path.basename(rec["image"]))[0])
        pairs.append(Pair(str(rid), rec["image"], caption.strip()))
    return pairs


def concept_balanced_filter(captions: list[str], extract: Extractor, min_count: int = 3,
                            max_per_phrase: int = 100, seed: int = 0, batch_size: int = 1000) -> list[int]:
    """Indices (ascending) of the captions kept by the paper's concept-balanced rule (see module notes)."""
    captions_of = defaultdict(list)
    with tqdm(total=len(captions), desc="noun phrases", unit=" captions") as bar:
        for start in range(0, len(captions), batch_size):
            batch = captions[start:start + batch_size]
            for i, phrases in enumerate(extract(batch), start):
                for phrase in {p.strip().lower() for p in phrases if p.strip()}:
                    captions_of[phrase].append(i)
            bar.update(len(batch))
    rng = random.Random(seed)
    selected = set()
    frequent = [p for p, idx in captions_of.items() if len(idx) >= min_count]
    for phrase in sorted(frequent, key=lambda p: (len(captions_of[p]), p)):
        idx = captions_of[phrase]
        selected.update(rng.sample(idx, max_per_phrase) if len(idx) > max_per_phrase else idx)
    return sorted(selected)


def spacy_noun_phrases(model: str = "en_core_web_sm", n_process: int = 1) -> Extractor:
    """Noun-phrase extractor backed by a spaCy pipeline (`doc.noun_chunks`)."""
    try:
        import spacy
    except ImportError:
        raise ImportError(f"the CC3M filter needs spaCy. {SPACY_HELP}") from None
    try:
        nlp = spacy.load(model, disable=["ner", "lemmatizer", "textcat"])
    except OSError as e:
        raise OSError(f"spaCy model {model!r} is not installed ({e}). {SPACY_HELP}") from None

    def extract(captions: list[str]):
        return ([chunk.text for chunk in doc.noun_chunks] for doc in nlp.pipe(captions, n_process=n_process))

    return extract


def stage1_rows(pairs: Iterable[Pair], image_root: str | os.PathLike | None, report: SkipReport,
                source: str = "<cc3m>", seed: int = 0):
    """Stage-1 rows: a brief-description instruction (from our list, chosen per id) + the image -> the caption."""
    for pair in pairs:
        try:
            img = read_image(image_root, pair.image, source, f"id {pair.id!r}")
        except BadRecordError as e:
            report.bad(e)
            continue
        yield {"id": pair.id, "images": [img],
               "messages": [user_message(pick(BRIEF_DESCRIPTION, pair.id, seed), with_image=True),
                            assistant_message(pair.caption)]}
