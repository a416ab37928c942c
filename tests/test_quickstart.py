"""`uniar quickstart` end to end on a tiny budget: every stage runs and the report links what it made."""

import json

from uniar.cli import main


def test_quickstart_runs_both_models_and_writes_the_report(tmp_path):
    out = tmp_path / "qs"
    rc = main(["quickstart", "--out", str(out), "--minutes", "0.3", "--eval-n", "4", "--pool-size", "64"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["models"] == ["ugen-tiny", "unifluid-tiny"]
    for kind in ("vq", "kl"):
        assert 0.0 <= report[f"tokenizer_{kind}"]["recon_exact"] <= 1.0
    md = (out / "report.md").read_text()
    for preset in ("ugen-tiny", "unifluid-tiny"):
        assert report[preset]["steps"] >= 10
        assert "t2i_exact" in report[preset]["metrics"]
        for grid in ("t2i_test.png", "caption_test.png", "edit_test.png"):
            assert (out / preset / "eval" / grid).is_file()
            assert f"{preset}/eval/{grid}" in md
    assert (out / "shapesworld_preview.png").is_file()
