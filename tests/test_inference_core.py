"""The generation core: batching equals alone, per-row limits and stop strings, errors that name the problem."""

import threading

import pytest
from inference_helpers import data_url, random_image, save_tiny_checkpoint

from hf_llava.inference import Engine, ImageSources, InputError, SamplingParams, canonical_messages
from hf_llava.inference.engine import _held_back


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def engine(checkpoint):
    engine = Engine.from_pretrained(str(checkpoint), max_batch_size=8, max_images=2)
    yield engine
    engine.close()


def ask(text, images=0):
    return [{"role": "user", "content": [*[{"type": "image"}] * images, {"type": "text", "text": text}]}]


class Paused:
    """Holds the engine's worker inside its current `generate` call until released, so requests pile up."""

    def __init__(self, engine):
        self.engine, self.release = engine, threading.Event()

    def __enter__(self):
        started = threading.Event()
        original = self.engine.model.generate

        def blocked(*args, **kwargs):
            started.set()
            self.release.wait(60)
            self.engine.model.generate = original
            return original(*args, **kwargs)

        self.engine.model.generate = blocked
        self.blocker = self.engine.generate(ask("hold"), max_new_tokens=1)
        assert started.wait(60)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.blocker.result()


def test_a_greedy_answer_is_the_same_alone_and_inside_a_batch(engine):
    requests = [(ask("What is in the image?", 1), [random_image(0)], 10),
                (ask("Describe the picture in detail, please, with every shape and colour"), [], 6),
                (ask("Where?", 1), [random_image(1)], 10),
                (ask("How many objects are there in this scene? Answer with one number.", 1), [random_image(2)], 3)]
    alone = [engine.generate(m, i, max_new_tokens=n).result() for m, i, n in requests]
    calls = engine.stats()["generate_calls"]
    with Paused(engine):  # all four wait, then run as one left-padded batch
        batch = [engine.generate(m, i, max_new_tokens=n) for m, i, n in requests]
    assert [g.result() for g in batch] == alone and len(set(alone)) == 4
    assert engine.stats()["generate_calls"] == calls + 2 and engine.stats()["largest_batch"] >= 4
    assert [g.completion_tokens for g in batch] == [10, 6, 10, 3]  # each row stops at its own max_new_tokens
    assert all(g.finish_reason == "length" for g in batch)


def test_sampled_requests_batch_only_with_the_same_settings_and_a_seed_repeats(engine):
    sampled = dict(temperature=0.9, top_p=0.8, seed=7, max_new_tokens=8)
    first = engine.generate(ask("Tell me a story"), **sampled).result()
    calls = engine.stats()["generate_calls"]
    with Paused(engine):
        again = engine.generate(ask("Tell me a story"), **sampled)
        greedy = engine.generate(ask("Tell me a story"), max_new_tokens=8)
    assert again.result() == first and greedy.result() != first
    assert engine.stats()["generate_calls"] == calls + 3  # the blocker, then one call per sampling setup


def test_stop_strings_cut_the_answer_and_the_stream_concatenates_to_it(engine):
    full = engine.generate(ask("Say something long"), max_new_tokens=16).result()
    stop = full[5:8]
    generation = engine.generate(ask("Say something long"), max_new_tokens=16, stop=[stop, "never there"])
    chunks = list(generation)
    assert "".join(chunks) == generation.text == full[:full.index(stop)]
    assert generation.finish_reason == "stop" and len(chunks) > 1
    assert _held_back("abc</", ["</s>"]) == 2 and _held_back("abc", ["</s>"]) == 0


def test_a_cancelled_request_ends_with_what_it_had(engine):
    with Paused(engine):
        queued = engine.generate(ask("never mind"), max_new_tokens=50)
        queued.cancel()
    assert queued.result() == "" and queued.finish_reason == "cancelled"


def test_openai_and_canonical_messages_give_the_same_prompt(engine):
    image = random_image(3)
    openai_style = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                                 {"type": "text", "text": "What?"}]}]
    canonical = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, *ask("What?", 1)]
    a, b = engine.prepare(openai_style), engine.prepare(canonical, [image])
    assert a.messages == b.messages and a.num_tokens == b.num_tokens
    assert list(a.images[0].getdata()) == list(image.getdata())
    assert engine.generate(openai_style, max_new_tokens=5).result() == \
        engine.generate(canonical, [image], max_new_tokens=5).result()


def test_errors_name_the_problem(engine, tmp_path):
    with pytest.raises(InputError, match=r"2 images but the messages have 1 <image> slot"):
        engine.prepare(ask("x", 1), [random_image(0), random_image(1)])
    with pytest.raises(InputError, match=r"messages\[0\].content\[1\]: an <image> slot with no image"):
        engine.prepare(ask("x", 2), [random_image(0)])
    with pytest.raises(InputError, match="3 images in one request; this server takes at most 2"):
        engine.prepare(ask("x", 3), [random_image(k) for k in range(3)])
    with pytest.raises(InputError, match=r"messages\[0\].content\[0\] does not decode as an image"):
        engine.prepare(ask("x", 1), [b"GIF89a not really"])
    with pytest.raises(InputError, match="contains the image placeholder '<image>' as text"):
        engine.prepare(ask("<image>\nWhat is it?"))
    with pytest.raises(InputError, match="only data:image/...;base64 URLs are accepted here"):
        engine.prepare(ask("x", 1), ["/etc/hostname"])  # a server never reads its own files for a client
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match=r"bad.png\) does not decode as an image"):
        engine.prepare(ask("x", 1), [str(tmp_path / "bad.png")], ImageSources(local_files=True))
    with pytest.raises(InputError, match="has role 'tool'"):
        engine.prepare([{"role": "tool", "content": "x"}])
    with pytest.raises(InputError, match="must be a user turn"):
        engine.prepare([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}])
    with pytest.raises(InputError, match="top_p must be in"):
        SamplingParams(top_p=0)

    fits = engine.prepare(ask("word " * 100, 1), [random_image(0)]).num_tokens
    per_word = engine.prepare(ask("word " * 101, 1), [random_image(0)]).num_tokens - fits
    words = 100 + (512 - fits) // per_word + 10
    with pytest.raises(InputError) as error:
        engine.prepare(ask("word " * words, 1), [random_image(0)])
    tokens = fits + (words - 100) * per_word
    assert f"the prompt is {tokens} tokens (1 image(s) x 16), {tokens - 511} over the model's context of 512" \
        in str(error.value)


def test_max_new_tokens_is_capped_by_the_room_left_in_the_context(engine):
    prompt = engine.prepare(ask("word " * 100))
    generation = engine.submit(prompt, SamplingParams(max_new_tokens=10_000))
    assert generation.params.max_new_tokens == 512 - prompt.num_tokens


def test_canonical_messages_keep_text_order_and_accept_string_content():
    messages, images = canonical_messages([{"role": "developer", "content": "rules"},
                                           {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                        {"type": "image", "image": random_image(0)},
                                                                        {"type": "text", "text": "b"}]}])
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": "rules"}]}
    assert [b["type"] for b in messages[1]["content"]] == ["text", "image", "text"] and len(images) == 1


def test_transformers_pipeline_runs_a_hf_llava_checkpoint(checkpoint, engine):
    import transformers

    pipe = transformers.pipeline("image-text-to-text", model=str(checkpoint), trust_remote_code=True)
    image = random_image(4)
    chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}]
    out = pipe(text=chat, generate_kwargs={"max_new_tokens": 6, "do_sample": False})
    assert out[0]["generated_text"][-1]["content"] == engine.generate(ask("What?", 1), [image],
                                                                      max_new_tokens=6).result()
