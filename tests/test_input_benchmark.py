"""vit_jax.input_benchmark: a handful of small JPEGs through the real pipeline, the report."""

import json
import pathlib

import pytest
import tensorflow_datasets as tfds

from vit_jax import input_benchmark
from vit_jax.tools import input_benchmarking

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_input_benchmark_measures_every_setting_and_writes_json(tmp_path, capsys):
    data_dir, out = tmp_path / "data", tmp_path / "result.json"
    result = input_benchmark.main([
        "--config", str(ROOT / "configs" / "b16.py"), "--images", "6", "--width", "80",
        "--height", "60", "--image-size", "32", "--batch-size", "4", "--warmup", "1",
        "--batches", "2", "--repeats", "1", "--randaugment", "0,10", "--randaugment", "2,15",
        "--gpu-images-per-s", "100", "--data-dir", str(data_dir), "--out", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [r["randaugment"] for r in result["rows"]] == [[0, 10.0], [2, 15.0]]
    for row in result["rows"]:
        (sample,) = row["samples"]
        assert sample["images"] == 8 and sample["wall_s"] > 0 and sample["cpu_s"] > 0
        assert row["images_per_s"] == pytest.approx(8 / sample["wall_s"])
        assert row["images_per_core_s"] == pytest.approx(8 / sample["cpu_s"])
        assert row["cores_per_gpu"] == pytest.approx(100 / row["images_per_core_s"])
    assert result["source"]["num_images"] == 6 and result["source"]["mean_jpeg_bytes"] > 500
    pipeline = result["pipeline"]
    assert pipeline["image_size"] == 32 and pipeline["augment"] == "inception_crop"
    assert result["machine"]["cpus_usable"] >= 1 and len(result["machine"]["loadavg_end"]) == 3

    table = capsys.readouterr().out
    assert "| off |" in table and "| (2, 15) |" in table and "cores for 100 img/s" in table
    # The source is a tfds dataset of the JPEG files as written (what the pipeline decodes).
    builder = tfds.builder(input_benchmarking.DATASET, data_dir=str(data_dir))
    assert builder.info.splits["train"].num_examples == 6
    assert builder.info.features["image"].encoding_format == "jpeg"
    jpegs = sorted((data_dir / "downloads" / "manual").glob("*.jpg"))
    assert len(jpegs) == 6 and all(p.read_bytes()[:2] == b"\xff\xd8" for p in jpegs)
