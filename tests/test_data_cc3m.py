import pytest
from data_helpers import builder_module, pixels, write_image, write_json

from hf_llava.data.builder import build
from hf_llava.data.cc3m import concept_balanced_filter, read_pairs, spacy_noun_phrases
from hf_llava.data.errors import BadRecordError, SkipReport
from hf_llava.data.instructions import BRIEF_DESCRIPTION

# Captions are written as "phrase; phrase" so the injected extractor is a split. Worked by hand:
#   dog: 0 1 2 (case-folded "Dog")   cat: 3 4 5   park: 0 4 7   -> seen 3 times: kept
#   sofa: 3 8   bench: 7 9   bird: 6 10 (counted once per caption, not 4 times)   ball, beach, tree: 1 -> dropped
# Pool = captions of dog, cat, park = {0, 1, 2, 3, 4, 5, 7}; 6, 8, 9, 10 hold only rare phrases.
CAPTIONS = ["dog; park", "dog; ball", "Dog; beach", "cat; sofa", "cat; park", "cat", "bird", "park; bench", "sofa",
            "tree; bench", "bird; bird; bird"]


def split_phrases(captions):
    return [c.split(";") for c in captions]


def test_filter_hand_worked():
    assert concept_balanced_filter(CAPTIONS, split_phrases) == [0, 1, 2, 3, 4, 5, 7]
    assert concept_balanced_filter(CAPTIONS, split_phrases, batch_size=4) == [0, 1, 2, 3, 4, 5, 7]
    # min_count 2 admits sofa, bench and bird: everything but nothing-but-rare captions survives
    assert concept_balanced_filter(CAPTIONS, split_phrases, min_count=2) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_filter_caps_captions_per_phrase_with_seeded_sampling():
    captions = [f"kite; x{i}" for i in range(10)] + ["owl", "owl", "owl"]
    picks = {}
    for seed in range(6):
        kept = concept_balanced_filter(captions, split_phrases, max_per_phrase=4, seed=seed)
        assert kept[-3:] == [10, 11, 12]  # owl: 3 captions, under the cap, all kept
        assert len(kept) == 7 and all(i < 10 for i in kept[:-3])  # kite: 4 of its 10, sampled
        assert concept_balanced_filter(captions, split_phrases, max_per_phrase=4, seed=seed) == kept
        picks[seed] = tuple(kept)
    assert len(set(picks.values())) > 1  # the seed matters


def test_read_pairs_formats(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("a dog in a park\timgs/GCC_1.jpg\nmissing image column\n\tonly/image.jpg\na cat\timgs/GCC_2.jpg\n")
    with pytest.raises(BadRecordError, match="pairs.tsv: record line 2: expected 'caption<TAB>image'"):
        read_pairs(tsv)
    report = SkipReport(skip_bad=True)
    pairs = read_pairs(tsv, report)
    assert [(p.id, p.image, p.caption) for p in pairs] == [("GCC_1", "imgs/GCC_1.jpg", "a dog in a park"),
                                                          ("GCC_2", "imgs/GCC_2.jpg", "a cat")]
    assert report.counts == {"malformed record": 2}
    meta = write_json(tmp_path / "metadata.json", [{"id": "GCC_9", "image": "GCC_9.jpg", "caption": "a bird",
                                                    "url": "http://x"}, {"image": "n.jpg", "caption": ""}])
    report = SkipReport(skip_bad=True)
    assert [(p.id, p.caption) for p in read_pairs(meta, report)] == [("GCC_9", "a bird")]
    assert report.counts == {"missing caption": 1}
    chat = write_json(tmp_path / "chat.jsonl", [{"id": "GCC_3", "image": "GCC_3.jpg", "conversations": [
        {"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": "a red bus"}]}], jsonl=True)
    assert [(p.id, p.image, p.caption) for p in read_pairs(chat)] == [("GCC_3", "GCC_3.jpg", "a red bus")]


def test_spacy_missing_says_how_to_install():
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="python -m spacy download en_core_web_sm"):
            spacy_noun_phrases()
    else:
        with pytest.raises(OSError, match="spacy download"):
            spacy_noun_phrases("no_such_pipeline_xyz")


def test_builder_filters_and_writes_stage1_rows(tmp_path):
    lines = []
    for i, caption in enumerate(CAPTIONS):
        write_image(tmp_path / "img" / f"{i}.png", (i * 20, 0, 0), size=(3, 2))
        lines.append(f"{caption}\t{i}.png")
    (tmp_path / "img" / "2.png").unlink()  # a kept caption whose image is missing
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    cls = builder_module("cc3m_595k").Cc3m595k
    kwargs = dict(pairs=str(tsv), image_root=str(tmp_path / "img"), extractor=split_phrases)
    with pytest.raises(BadRecordError, match="id '2': image file not found"):
        build(cls, **kwargs)
    dd, reports = build(cls, skip_bad=True, **kwargs)
    rows = list(dd["train"])
    assert [r["id"] for r in rows] == ["0", "1", "3", "4", "5", "7"] and reports["train"].counts == {"missing image": 1}
    r = rows[2]
    assert pixels(r["images"][0]) == [(60, 0, 0)] * 6
    user, assistant = r["messages"]
    assert user["content"][0] == {"type": "image", "text": None} and user["content"][1]["text"] in BRIEF_DESCRIPTION
    assert assistant == {"role": "assistant", "content": [{"type": "text", "text": "cat; sofa"}]}
    dd, _ = build(cls, no_filter=True, skip_bad=True, **kwargs)  # already-filtered input: everything converted
    assert len(dd["train"]) == len(CAPTIONS) - 1
