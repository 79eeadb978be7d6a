"""The report: table rows and columns from metrics files, plots written, others ignored."""

from pst_distill.config import ReportConfig
from pst_distill.io import write_json, write_text
from pst_distill.report import build_report, load_metrics, moving_average


def eval_metrics(method, acc):
    task = {"n": 2, "accuracy_strict": acc, "accuracy_flexible": acc, "parse_failures_strict": 0,
            "parse_failures_flexible": 0}
    return {"stage": "evaluate_student", "method": method, **task,
            "tasks": {"coin_flip": task, "last_letter_concatenation": {**task, "accuracy_flexible": 0.25}},
            "generated_tokens_per_question": 3.5, "seconds_per_question": 0.125}


def test_report_table_and_plots(tmp_path):
    write_json(tmp_path / "m" / "pst.json", eval_metrics("pst", 0.5))
    write_json(tmp_path / "m" / "answer_only.json", eval_metrics("answer_only", 1.0))
    write_json(tmp_path / "m" / "prepare.json", {"items": 3})  # another stage's metrics
    write_json(tmp_path / "m" / "train" / "pst.json", {"method": "pst", "steps": 3, "final_loss": 1.0,
                                                       "tokens_per_s": 100.0, "wall_seconds": 9.0})
    write_text(tmp_path / "c" / "pst.tsv", "step\tloss\n1\t2.0\n2\t1.5\n")
    out = tmp_path / "r" / "report.md"
    build_report(tmp_path / "m", tmp_path / "m" / "train", tmp_path / "c", out,
                 tmp_path / "r" / "accuracy.png", tmp_path / "r" / "loss.png", ReportConfig())
    md = out.read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| answer_only") or ln.startswith("| pst")]
    assert rows[0].startswith("| answer_only |") and rows[1].startswith("| pst |")  # method order
    assert "| coin_flip | last_letter_concatenation | overall |" in md
    assert "| pst | 0.500 | 0.250 | **0.500** | 0.500 | 0 | 3.5 | 0.125 | 2 |" in md
    assert "| pst | full" not in md and "| pst | – | 3 | 1.0000 | 100 | 9 |" in md
    assert "](accuracy.png)" in md and "](loss.png)" in md
    for png in ("accuracy.png", "loss.png"):
        assert (tmp_path / "r" / png).read_bytes()[:4] == b"\x89PNG"
    assert list(load_metrics(tmp_path / "m")) == ["answer_only", "pst"]


def test_moving_average():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
