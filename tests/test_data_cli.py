"""`uniar data export` and `uniar data preview` end to end."""

import json

import numpy as np
from PIL import Image

from uniar.cli import main
from uniar.data.shapesworld import Scene, get_example
from uniar.data.shapesworld.parser import parse_image


def test_export_writes_records_whose_images_parse_back(tmp_path):
    out = tmp_path / "export"
    assert main(["data", "export", "--split", "test", "-n", "12", "--start", "5", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(5, 17))
    for r in records:
        example = get_example("test", r["index"])
        assert r["split"] == "test" and r["size"] == 64 and r["caption"] == example.caption
        assert [q["answer"] for q in r["questions"]] == [q.answer for q in example.questions]
        assert r["edit"]["instruction"] == example.edit.instruction and r["edit"]["type"] == example.edit.type
        for image_key, scene in ((r["image"], r["scene"]), (r["edit"]["target_image"], r["edit"]["target_scene"])):
            img = np.asarray(Image.open(out / image_key).convert("RGB"))
            assert img.shape == (64, 64, 3)
            assert parse_image(img) == Scene.from_dict(scene)


def test_export_at_another_size(tmp_path):
    assert main(["data", "export", "--split", "novel", "-n", "2", "--size", "96", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "records.jsonl").read_text().splitlines()[0])
    img = np.asarray(Image.open(tmp_path / record["image"]).convert("RGB"))
    assert img.shape == (96, 96, 3) and parse_image(img) == Scene.from_dict(record["scene"])


def test_preview_writes_a_png(tmp_path):
    out = tmp_path / "preview.png"
    assert main(["data", "preview", "--split", "novel", "-n", "6", "--columns", "3", "--out", str(out)]) == 0
    sheet = Image.open(out)
    assert sheet.format == "PNG" and sheet.width > 3 * 64 and sheet.height > 2 * 64


def test_bad_arguments_are_user_errors(tmp_path, capsys):
    assert main(["data", "export", "-n", "2", "--size", "32", "--out", str(tmp_path)]) == 2
    assert "S >= 48" in capsys.readouterr().err
    assert main(["data", "preview", "-n", "0", "--out", str(tmp_path / "p.png")]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["data", "export", "-n", "1", "--out", str(tmp_path / "file")]) == 2
