"""`modex batch` (issue 6): the CSV matches `modex predict` image by image, corrupt files are rows with
status "error" (exit 1, counted), --resume completes an interrupted CSV to the same rows, and
--shard K/N splits the folder into disjoint parts whose union is the whole. The model is a real
exported checkpoint (zoo_fixtures' mobilenet_v3_small, as ONNX and float16 TFLite); predict itself
is checked against PyTorch in test_predict.py.

    MODEX_BIN=build/modex /usr/bin/python3 -m pytest -q tests/oracle/test_batch.py
"""
import csv
import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_util as ou  # noqa: E402
import test_predict as tp  # noqa: E402  (image maker)
import zoo_fixtures as zf  # noqa: E402

CASE = "zoo-mobilenet_v3_small-a"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    zf.ensure([CASE])
    work = tmp_path_factory.mktemp("batch")
    made = tp._images(work / "images")
    sub = work / "images" / "nested" / "deeper"
    sub.mkdir(parents=True)
    for p in made[:3]:  # the same pictures again, one level down, under other names
        (sub / ("copy_" + p.name)).write_bytes(p.read_bytes())
    (work / "images" / "broken.png").write_bytes(made[1].read_bytes()[:100])
    (work / "images" / ".hidden.jpg").write_bytes(made[0].read_bytes())  # hidden: not listed
    meta = zf.load_meta(CASE)
    proc = ou.run_modex(["export", "--checkpoint", zf.case_dir(CASE) / meta["checkpoint"], "--format", "both",
                         "--quantize", "none,float16", "--output-dir", work / "m", "--name", "m"])
    assert proc.returncode == 0, proc.stderr
    return {"dir": work / "images", "work": work, "onnx": work / "m" / "m.onnx", "fp16": work / "m" / "m_float16.tflite"}


def read_csv(path):
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    return {r["path"]: r for r in rows}


@pytest.mark.parametrize("which", ["onnx", "fp16"])
def test_csv_matches_predict(setup, which, tmp_path):
    out = tmp_path / "r.csv"
    proc = ou.run_modex(["batch", setup[which], setup["dir"], "--output", out, "--batch-size", "4", "--json"])
    assert proc.returncode == 1, proc.stderr  # one corrupt file
    summary = json.loads(proc.stdout)
    assert summary["classified"] == 9 and summary["failed"] == 1 and summary["images"] == 10
    rows = read_csv(out)
    assert len(rows) == 10
    broken = [r for p, r in rows.items() if p.endswith("broken.png")]
    assert broken and broken[0]["status"] == "error" and "broken.png" in broken[0]["error"]
    pred = ou.run_modex(["predict", setup[which], *[p for p, r in rows.items() if r["status"] == "ok"], "--json"])
    assert pred.returncode == 0, pred.stderr
    for r in json.loads(pred.stdout)["results"]:
        row = rows[r["image"]]
        assert int(row["class"]) == r["predicted_class"], (r["image"], row, r["predicted_class"])
        assert abs(float(row["confidence"]) - r["confidence"]) <= 1e-5
        for k, t in enumerate(r["top"], 1):
            assert int(row[f"top{k}_class"]) == t["class"]
            assert abs(float(row[f"top{k}_prob"]) - t["probability"]) <= 1e-5


def test_resume_completes_an_interrupted_csv(setup, tmp_path):
    full = tmp_path / "full.csv"
    ou.run_modex(["batch", setup["onnx"], setup["dir"], "--output", full])
    text = full.read_text()
    cut = tmp_path / "cut.csv"
    cut.write_text(text[: len(text) // 2])  # ends mid-row, like a killed run
    proc = ou.run_modex(["batch", setup["onnx"], setup["dir"], "--output", cut, "--resume", "--json"])
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["already_done"] > 0
    assert read_csv(cut) == read_csv(full)
    proc = ou.run_modex(["batch", setup["onnx"], setup["dir"], "--output", full])
    assert proc.returncode == 1 and "--resume" in proc.stderr  # never silently overwritten
    assert full.read_text() == text


def test_shards_partition_the_folder(setup, tmp_path):
    whole = tmp_path / "whole.csv"
    ou.run_modex(["batch", setup["onnx"], setup["dir"], "--output", whole])
    union = {}
    for k in range(3):
        out = tmp_path / f"s{k}.csv"
        ou.run_modex(["batch", setup["onnx"], setup["dir"], "--output", out, "--shard", f"{k}/3"])
        part = read_csv(out)
        assert not set(part) & set(union)
        union.update(part)
    assert union == read_csv(whole)
    for bad in ["3/3", "1", "-1/2", "a/b"]:
        proc = ou.run_modex(["batch", setup["onnx"], setup["dir"], "--output", tmp_path / "x.csv", "--shard", bad])
        assert proc.returncode == 1 and "--shard" in proc.stderr, bad
