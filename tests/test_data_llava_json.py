import json

import pytest
from data_helpers import builder_module, pixels, write_image, write_json

from hf_llava.data import jsonstream
from hf_llava.data.builder import build, main
from hf_llava.data.errors import BadRecordError, SkipReport
from hf_llava.errors import UserError
from hf_llava.data.llava_json import canonical_to_llava, iter_llava_json, llava_to_canonical, write_llava_json

IMG, TXT = {"type": "image", "text": None}, lambda t: {"type": "text", "text": t}

RECORDS = [  # the quirks of real LLaVA files: int and str ids, image after the question, text-only, 2 images
    {"id": 7, "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat color is it?"}, {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
    {"id": "000000123", "image": "sub/b.jpg", "conversations": [
        {"from": "human", "value": "Describe this.\n<image>"}, {"from": "gpt", "value": "A blue box."}]},
    {"id": "text-1", "conversations": [
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    {"id": 9, "image": ["a.png", "sub/b.jpg"], "conversations": [
        {"from": "human", "value": "<image>\nCompare with\n<image>\nplease."}, {"from": "gpt", "value": "Same size."}]},
]


@pytest.fixture
def llava_files(tmp_path):
    root = tmp_path / "images"
    a = write_image(root / "a.png", (255, 0, 0))
    b = write_image(root / "sub" / "b.jpg", (0, 0, 255), fmt="JPEG")
    return write_json(tmp_path / "data.json", RECORDS), root, {"a.png": a, "sub/b.jpg": b}


def test_stream_parser_handles_chunk_boundaries_and_jsonl(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonstream, "_CHUNK", 5)  # every record and number spans several reads
    data = [{"id": i, "v": "x" * i, "f": 12345.25} for i in range(20)] + [123456789, "s", [1, 2]]
    path = tmp_path / "d.json"
    for text in (json.dumps(data), json.dumps(data, indent=2), "\ufeff" + json.dumps(data)):
        path.write_text(text, encoding="utf-8")
        assert list(jsonstream.iter_json_records(path)) == data
    path.write_text("[]")
    assert list(jsonstream.iter_json_records(path)) == []
    write_json(path, data, jsonl=True)
    assert list(jsonstream.iter_json_records(path)) == data


@pytest.mark.parametrize("text, where", [('[{"a": 1}, {"b": ', "record 1"), ('[{"a": 1} {"b": 2}]', "record 1"),
                                         ('[{"a": 1}, ]', "record 1"), ('[1, 2', "record 2"),
                                         ('{"a": 1}\n{"b": \n', "line 2")])
def test_stream_parser_names_the_malformed_record(tmp_path, text, where):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path}.*{where}"):
        list(jsonstream.iter_json_records(path))


def test_import_rows_field_by_field(llava_files):
    path, root, raw = llava_files
    rows = list(iter_llava_json(path, root))
    assert [r["id"] for r in rows] == ["7", "000000123", "text-1", "9"]
    assert rows[0]["messages"] == [
        {"role": "user", "content": [IMG, TXT("What color is it?")]}, {"role": "assistant", "content": [TXT("Red.")]},
        {"role": "user", "content": [TXT("Sure?")]}, {"role": "assistant", "content": [TXT("Yes.")]}]
    assert rows[0]["images"] == [{"path": "a.png", "bytes": raw["a.png"]}]
    assert rows[1]["messages"][0]["content"] == [TXT("Describe this."), IMG]  # image after the question
    assert rows[2]["images"] == [] and [m["role"] for m in rows[2]["messages"]] == ["system", "user", "assistant"]
    assert rows[3]["messages"][0]["content"] == [IMG, TXT("Compare with"), IMG, TXT("please.")]
    assert [im["path"] for im in rows[3]["images"]] == ["a.png", "sub/b.jpg"]


def test_export_round_trips(llava_files, tmp_path):
    path, root, raw = llava_files
    out, image_dir = tmp_path / "back.json", tmp_path / "exported_images"
    assert write_llava_json(iter_llava_json(path, root), out, image_dir=image_dir) == 4
    back = json.loads(out.read_text())
    expected = [dict(r, id=str(r["id"])) for r in RECORDS]  # ids come back as strings, by design
    assert back == expected
    assert (image_dir / "sub" / "b.jpg").read_bytes() == raw["sub/b.jpg"]
    # and from a built Dataset (decoded images): paths survive the cast back to undecoded images
    dd, _ = build(builder_module("llava_instruct").LlavaInstruct, json=str(path), image_root=str(root))
    write_llava_json(dd["train"], tmp_path / "from_ds.json")
    assert json.loads((tmp_path / "from_ds.json").read_text()) == expected
    assert canonical_to_llava(llava_to_canonical(RECORDS[1])) == dict(RECORDS[1], id="000000123")


@pytest.mark.parametrize("record, problem", [
    ({"id": 1, "image": "a.png", "conversations": [{"from": "human", "value": "no marker"},
                                                   {"from": "gpt", "value": "x"}]}, "0 <image> markers for 1 images"),
    ({"id": 2, "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "x"}]},
     "1 <image> markers for 0 images"),
    ({"id": 3, "image": "a.png", "conversations": [{"from": "human", "value": "q"},
                                                   {"from": "gpt", "value": "<image>"}]}, "images belong in human"),
    ({"id": 4, "conversations": [{"from": "bot", "value": "q"}]}, "turn 0 must be"),
    ({"id": 5, "conversations": []}, "non-empty list"),
    ({"id": 7, "conversations": [{"from": "system", "value": "s"}, {"from": "gpt", "value": "hello"},
                                 {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
     "starts with the assistant"),
    ({"conversations": [{"from": "human", "value": "q"}]}, "missing or invalid id"),
    ({"id": 6, "image": "missing.png", "conversations": [{"from": "human", "value": "<image>"},
                                                         {"from": "gpt", "value": "x"}]}, "image file not found"),
])
def test_bad_records_raise_naming_the_record(tmp_path, record, problem):
    write_image(tmp_path / "a.png")
    with pytest.raises(BadRecordError, match=problem) as e:
        llava_to_canonical(record, tmp_path, source="f.json", index=3)
    assert str(e.value).startswith("f.json: record #3")


def test_corrupt_and_truncated_images_are_bad(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    full = write_image(tmp_path / "t.jpg", size=(64, 64), fmt="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(full[: len(full) // 2])
    for name in ("junk.png", "trunc.jpg"):
        rec = {"id": name, "image": name, "conversations": [{"from": "human", "value": "<image>"},
                                                            {"from": "gpt", "value": "x"}]}
        with pytest.raises(BadRecordError, match=f"id '{name}'.*(corrupt|not a readable)"):
            llava_to_canonical(rec, tmp_path)


def test_builder_cli_skip_bad_counts_and_reports(tmp_path, capsys):
    write_image(tmp_path / "img" / "a.png")
    (tmp_path / "img" / "bad.png").write_bytes(b"garbage")
    good = {"id": 1, "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                         {"from": "gpt", "value": "a"}]}
    records = [good, dict(good, id=2, image="bad.png"), dict(good, id=3, image="gone.png"),
               {"id": 4, "conversations": [{"from": "human", "value": "<image>"}]}, dict(good, id=5)]
    src = write_json(tmp_path / "d.json", records)
    args = ["--json", src, "--image-root", str(tmp_path / "img")]
    with pytest.raises(SystemExit) as e:  # without --skip-bad: stops at the first bad record, naming it
        main(builder_module("llava_instruct").LlavaInstruct, args + ["--output-dir", str(tmp_path / "o1")])
    assert e.value.code == 2
    assert "record #1 (id '2')" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()  # nothing half-written
    report = main(builder_module("llava_instruct").LlavaInstruct,
                  args + ["--skip-bad", "--output-dir", str(tmp_path / "o2")])
    split = report["configs"]["default"]["splits"]["train"]
    assert split["rows"] == 2 and split["skipped"] == 3
    assert split["by_problem"] == {"corrupt image": 1, "missing image": 1, "image count mismatch": 1}
    card = (tmp_path / "o2" / "README.md").read_text()
    assert "| default | train | 2 | 3 (" in card and "gone.png" in card
    assert json.loads((tmp_path / "o2" / "build_report.json").read_text())["configs"] == report["configs"]
    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "o2"))["train"]
    assert ds["id"] == ["1", "5"] and pixels(ds[0]["images"][0]) == [(200, 30, 30)] * 48
    with pytest.raises(SystemExit):  # an existing output is not overwritten without --overwrite
        main(builder_module("llava_instruct").LlavaInstruct, args + ["--skip-bad", "--output-dir", str(tmp_path / "o2")])


@pytest.mark.parametrize("content", ["", "[]", "  \n"])
def test_an_empty_input_is_an_error_not_an_empty_dataset(tmp_path, capsys, content):
    src = tmp_path / "d.json"
    src.write_text(content)
    with pytest.raises(SystemExit) as e:
        main(builder_module("llava_instruct").LlavaInstruct, ["--json", str(src), "--output-dir", str(tmp_path / "o")])
    assert e.value.code == 2
    assert f"from --json {src}: the input has no records" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_output_dir_that_cannot_be_a_folder_is_named(tmp_path, capsys):
    src = write_json(tmp_path / "d.json", [{"id": 1, "conversations": [{"from": "human", "value": "q"},
                                                                       {"from": "gpt", "value": "a"}]}])
    (tmp_path / "a-file").write_text("x")
    for out, problem in [(tmp_path / "a-file", "is a file"), (tmp_path / "a-file" / "out", "cannot write there")]:
        with pytest.raises(SystemExit) as e:
            main(builder_module("llava_instruct").LlavaInstruct, ["--json", src, "--output-dir", str(out)])
        assert e.value.code == 2 and f"--output-dir {out}: {problem}" in capsys.readouterr().err


def test_every_record_skipped_is_an_error_with_the_reasons_counted(tmp_path, capsys):
    write_image(tmp_path / "img" / "a.png")
    good = {"id": 1, "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                         {"from": "gpt", "value": "a"}]}
    src = write_json(tmp_path / "d.json", [good, dict(good, id=2)])
    args = ["--json", src, "--image-root", str(tmp_path / "wrong-root"), "--skip-bad"]
    with pytest.raises(SystemExit) as e:
        main(builder_module("llava_instruct").LlavaInstruct, args + ["--output-dir", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "every record was skipped (2 record(s) skipped (2 missing image))" in err and "wrong --image-root" in err
    assert "a.png" in err and not (tmp_path / "o").exists()


def test_non_utf8_text_names_the_file_and_record(tmp_path):
    array, lines = tmp_path / "array.json", tmp_path / "lines.jsonl"
    array.write_bytes(b'[{"id": 1}, {"id": "caf\xe9"}]')
    lines.write_bytes(b'{"id": 1}\n{"id": "caf\xe9"}\n')
    with pytest.raises(UserError, match=f"{array}: line 1 is not UTF-8 text.*save the file as UTF-8"):
        list(jsonstream.iter_json_records(array))
    with pytest.raises(UserError, match=f"{lines}: line 2 is not UTF-8 text"):
        list(jsonstream.iter_json_records(lines))
    array.write_bytes(b'[{"id": 1, "text": "' + b"x" * 20_000 + b'"}, {"id": "caf\xe9"}]')  # past the first block
    with pytest.raises(UserError, match=rf"{array}: malformed JSON at record \d: not UTF-8 text"):
        list(jsonstream.iter_json_records(array))


def test_a_record_over_the_size_cap_names_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonstream, "_CHUNK", 16)
    monkeypatch.setattr(jsonstream, "_MAX_RECORD", 64)
    path = write_json(tmp_path / "big.json", [{"id": 1}, {"id": 2, "text": "x" * 200}])
    with pytest.raises(UserError, match=r"record 1: .* the cap on one record"):
        list(jsonstream.iter_json_records(path))


def test_a_file_holding_one_object_is_named_as_such(tmp_path):
    with pytest.raises(BadRecordError, match=r"not a LLaVA record \(keys 'data'; expected 'id' and 'conversations'\)"):
        llava_to_canonical({"data": []}, tmp_path)


def test_skip_report_without_skip_bad_raises():
    err = BadRecordError("f", "r", "broken", "kind")
    with pytest.raises(BadRecordError):
        SkipReport().bad(err)
    report = SkipReport(skip_bad=True)
    report.bad(err)
    report.bad(err)
    assert report.total == 2 and report.summary() == "2 record(s) skipped (2 kind)"
