"""``distillers bench --vs timm``: both pipelines run on the same models and the result records their times."""

from __future__ import annotations

import json
from pathlib import Path

from distillers import cli


def test_bench_vs_timm_writes_both_times(tmp_path: Path, capsys) -> None:
    out = tmp_path / "timm.json"
    code = cli.main(["bench", "--vs", "timm", "--pairs", "resnet10t:mobilenetv3_small_050", "--batch-size", "4",
                     "--steps", "4", "--warmup", "1", "--device", "cpu", "--json", str(out)])
    result = json.loads(out.read_text())
    assert code == 0 and result["teacher"] == "timm:resnet10t" and result["steps"] == 4
    assert result["timm_ms_per_step"] > 0 and result["ours_ms_per_step"] > 0
    assert abs(result["ratio"] - result["timm_ms_per_step"] / result["ours_ms_per_step"]) < 1e-9
    assert "ratio timm/ours" in capsys.readouterr().out
