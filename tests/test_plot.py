"""Learning-curve plots from run folders (no MAME)."""

from __future__ import annotations

import json

from tempest_gym.cli import plot


def test_plot_draws_eval_curves_and_reference_lines(tmp_path):
    run = tmp_path / "TempestMAME-v0_1"
    run.mkdir()
    evals = [{"timesteps": t, "summary": {"score": {"mean": 1000.0 * (i + 1)}, "max_level": {"mean": 1.0 + i}}}
             for i, t in enumerate((1000, 2000, 3000))]  # fmt: skip
    (run / "evaluations.json").write_text(json.dumps(evals))
    (run / "monitor.csv").write_text('#{"t_start": 0}\nr,l,t,score,level\n1.0,100,1.0,500,1\n2.0,150,2.0,900,2\n')
    ref = tmp_path / "expert.json"
    ref.write_text(json.dumps({"summary": {"score": {"mean": 50000.0}, "max_level": {"mean": 9.0}}}))
    out = tmp_path / "curves.png"
    assert plot.main([str(run), "-o", str(out), "--expert", str(ref), "--random", str(ref)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    t, score, level = plot.load_evaluations(run)
    assert t.tolist() == [1000, 2000, 3000] and level.tolist() == [1.0, 2.0, 3.0]
    assert plot.main([str(tmp_path / "missing"), "-o", str(out)]) == 2
