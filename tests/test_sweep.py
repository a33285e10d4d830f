"""`jaxvision sweep`: sweep-file parsing and checks, the results table, and a tiny 2-run sweep via the CLI."""

import csv
import glob
import json
import os

import pytest

from conftest import QUICKSTART, ROOT, TINY, run_cli
from jaxvision import sweep
from jaxvision.config import ConfigError

SWEEPS = os.path.join(ROOT, "configs", "segdepth", "sweeps")
DEEPLAB = os.path.join(ROOT, "configs", "segdepth", "deeplabv3plus.py")


def test_sweep_text_with_comments_blank_lines_and_quotes():
    text = ("# a comment\n\n"
            "P1.1c_756bb: --config.loss.semseg_weight=0.2 --config.loss.depth_weight=0.8  # trailing comment\n"
            "   \n"
            "P3+_39a6e:--config.model.aspp_rates '(6, 12, 18)'\n"
            "base:\n")
    runs = sweep.parse_sweep_text(text, "s.sweep")
    assert [(r.tag, r.overrides, r.where) for r in runs] == [
        ("P1.1c_756bb", ["--config.loss.semseg_weight=0.2", "--config.loss.depth_weight=0.8"], "s.sweep:3"),
        ("P3+_39a6e", ["--config.model.aspp_rates", "(6, 12, 18)"], "s.sweep:5"),
        ("base", [], "s.sweep:6")]
    planned = sweep.plan(QUICKSTART, runs, ["--config.train.num_steps=3"])
    assert planned[0][1].loss.semseg_weight == 0.2 and planned[1][1].model.aspp_rates == (6, 12, 18)
    assert all(config.train.num_steps == 3 for _, config in planned)


@pytest.mark.parametrize("line, message", [
    ("no colon here --config.a=1", "s.sweep:3: expected 'TAG: --config.key=value ...'"),
    ("bad/tag: --config.seed=1", "s.sweep:3: tag 'bad/tag' must be letters, digits"),
    ("run: --seed=1", "s.sweep:3: unrecognised argument '--seed=1'"),
    ("run: --config.seed='1", "s.sweep:3: No closing quotation"),
    ("run: --config.train.num_stepz=3", "s.sweep:3: unknown config key 'train.num_stepz'"),
    ("run: --config.train.num_steps=x", "s.sweep:3: config key 'train.num_steps' expects an int"),
    ("ok: --config.seed=2", "s.sweep:3: tag 'ok' is already used at s.sweep:1"),
])
def test_a_bad_sweep_line_is_named_by_its_number(line, message):
    text = f"ok: --config.seed=1\n# comment\n{line}\n"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        sweep.plan(QUICKSTART, sweep.parse_sweep_text(text, "s.sweep"))


def test_empty_sweep_and_missing_file():
    with pytest.raises(ConfigError, match="the sweep has no runs"):
        sweep.plan(QUICKSTART, sweep.parse_sweep_text("# nothing\n", "s.sweep"))
    with pytest.raises(ConfigError, match="sweep file not found: /no/such.sweep"):
        sweep.parse_sweep_file("/no/such.sweep")


def test_the_shipped_sweep_files_fit_the_segdepth_config():
    files = sorted(glob.glob(os.path.join(SWEEPS, "*.sweep")))
    assert len(files) >= 6
    for path in files:
        planned = sweep.plan(DEEPLAB, sweep.parse_sweep_file(path))
        assert len(planned) >= 3, path
    table5 = sweep.parse_sweep_file(os.path.join(SWEEPS, "002_table5_task_weights.sweep"))
    table5 = {r.tag: r.overrides for r in table5}
    assert table5["P1.1c_756bb"] == ["--config.loss.semseg_weight=0.2", "--config.loss.depth_weight=0.8"]
    assert len(table5) == 5


def test_results_table_formats():
    runs = [sweep.Run("a", ["--config.loss.semseg_weight=0.2"], "x:1"), sweep.Run("b", [], "x:2")]
    rows = [sweep.make_row(runs[0], "done", {"semseg": 71.6781, "depth": 25.4024, "total": 46.2757,
                                             "miou": 0.716781, "silog_rmse": 0.254024, "step": 4}),
            sweep.make_row(runs[1], "failed: NonFiniteLossError: loss became NaN")]
    md = sweep.format_markdown(rows, "t.sweep")
    assert "| tag | semseg ↑ | depth ↓ | total ↑ | mIoU | SI-log RMSE | overrides |" in md
    assert "| a | 71.678 | 25.402 | 46.276 | 0.7168 | 0.2540 | `--config.loss.semseg_weight=0.2` |" in md
    assert "| b | - | - | - | - | - | `` |" in md and "- b: failed: NonFiniteLossError" in md
    parsed = list(csv.DictReader(sweep.format_csv(rows).splitlines()))
    assert list(parsed[0]) == ["tag", "semseg", "depth", "total", "miou", "silog_rmse", "status", "overrides"]
    assert float(parsed[0]["total"]) == 46.2757 and parsed[0]["status"] == "done"
    assert parsed[1]["total"] == "" and parsed[1]["status"].startswith("failed")


def _csv_rows(workdir):
    with open(os.path.join(workdir, "results.csv")) as f:
        return list(csv.DictReader(f))


def test_two_run_sweep_through_the_cli_writes_the_table_and_skips_finished_runs(tmp_path, capsys):
    workdir = str(tmp_path / "sweep")
    sweep_file = tmp_path / "two.sweep"
    sweep_file.write_text("# two tiny runs\nw0.2: --config.loss.semseg_weight=0.2 --config.loss.depth_weight=0.8\n")
    args = ["sweep", "--config", QUICKSTART, "--workdir", workdir, "--sweep", str(sweep_file),
            "--run", "l1: --config.loss.depth_loss=l1", *TINY, "--config.train.num_steps=2"]
    first = run_cli(args)
    rows = _csv_rows(workdir)
    assert [r["tag"] for r in rows] == ["w0.2", "l1"] and all(r["status"] == "done" for r in rows)
    for row in rows:
        metrics = json.load(open(os.path.join(workdir, row["tag"], "eval_metrics.json")))
        assert metrics["step"] == 2
        for key in ("semseg", "depth", "total", "miou", "silog_rmse"):
            assert float(row[key]) == pytest.approx(metrics[key], rel=1e-9), key
    assert json.load(open(os.path.join(workdir, "w0.2", "config.json")))["loss"]["semseg_weight"] == 0.2
    assert json.load(open(os.path.join(workdir, "l1", "config.json")))["loss"]["depth_loss"] == "l1"
    md = open(os.path.join(workdir, "results.md")).read()
    assert md.startswith("# two.sweep") and "| w0.2 | " in md and "| l1 | " in md and md in first.stdout
    table = open(os.path.join(workdir, "results.csv")).read()

    # re-running skips the finished runs (in-process: the same code path as the CLI, without a new process)
    runs = [*sweep.parse_sweep_file(str(sweep_file)), sweep.parse_run("l1: --config.loss.depth_loss=l1", "--run 1")]
    common = [*TINY, "--config.train.num_steps=2"]
    assert [r["status"] for r in sweep.run_sweep(QUICKSTART, workdir, runs, common, dry_run=True)] == ["done", "done"]
    again = sweep.run_sweep(QUICKSTART, workdir, runs, common, title="two.sweep")
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2
    assert [r["total"] for r in again] == [float(r["total"]) for r in rows]
    assert open(os.path.join(workdir, "results.csv")).read() == table
    assert sorted(os.listdir(os.path.join(workdir, "l1", "checkpoints"))) == ["2"]
    with pytest.raises(ConfigError, match="holds a run of another config \\(loss.silog_lambda is 0.85 there, 0.1 now"):
        sweep.run_sweep(QUICKSTART, workdir, runs, [*common, "--config.loss.silog_lambda=0.1"])


def test_bad_sweep_file_through_the_cli_is_one_line_with_the_line_number(tmp_path):
    sweep_file = tmp_path / "bad.sweep"
    sweep_file.write_text("a: --config.seed=1\n\nb --config.seed=2\n")
    proc = run_cli(["sweep", "--config", QUICKSTART, "--workdir", str(tmp_path / "w"), "--sweep", str(sweep_file)],
                   check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"jaxvision: config error: {sweep_file}:3: expected 'TAG: --config.key=value ...', "
                                   f"got 'b --config.seed=2'")
    assert not os.path.exists(tmp_path / "w")


def _fake_runs(monkeypatch, calls):
    """train_and_evaluate / evaluate stand-ins: seed 13 fails with a NaN loss, seed 14 is interrupted."""
    import signal

    from jaxvision.config import save_config
    from jaxvision.train import loop

    def train(config, run_dir):
        calls.append(os.path.basename(run_dir))
        os.makedirs(run_dir, exist_ok=True)
        save_config(config, os.path.join(run_dir, "config.json"))
        if config.seed == 13:
            raise loop.NonFiniteLossError("loss became NaN/Inf at step 1")
        if config.seed == 14:
            raise loop.Interrupted("stopped by SIGTERM at step 1", signal.SIGTERM)

    def evaluate(config, run_dir):
        metrics = {"step": config.train.num_steps, "semseg": 50.0 + config.seed, "depth": 20.0,
                   "total": 30.0 + config.seed, "miou": 0.5, "silog_rmse": 0.2}
        with open(os.path.join(run_dir, "eval_metrics.json"), "w") as f:
            json.dump(metrics, f)
        return metrics

    monkeypatch.setattr(loop, "train_and_evaluate", train)
    monkeypatch.setattr(loop, "evaluate", evaluate)


def test_a_failed_run_is_reported_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    from jaxvision import cli
    from jaxvision.train.loop import Interrupted
    calls = []
    _fake_runs(monkeypatch, calls)
    workdir = str(tmp_path / "w")
    base = ["sweep", "--config", QUICKSTART, "--workdir", workdir, "--run", "a: --config.seed=1",
            "--run", "nan: --config.seed=13", "--run", "b: --config.seed=2"]
    assert cli.main(base) == 1
    out, err = capsys.readouterr()
    assert calls == ["a", "nan", "b"]
    assert "run nan failed: NonFiniteLossError: loss became NaN/Inf at step 1" in err
    assert "1 run(s) did not finish: nan" in err
    rows = _csv_rows(workdir)
    assert [(r["tag"], r["total"], r["status"]) for r in rows] == [
        ("a", "31.0", "done"), ("nan", "", "failed: NonFiniteLossError: loss became NaN/Inf at step 1"),
        ("b", "32.0", "done")]
    assert "- nan: failed: NonFiniteLossError" in open(os.path.join(workdir, "results.md")).read()
    # a finished run is skipped; an interruption stops the sweep after writing the table
    calls.clear()
    with pytest.raises(Interrupted):
        sweep.run_sweep(QUICKSTART, workdir, [sweep.parse_run("a: --config.seed=1", "x"),
                                              sweep.parse_run("stop: --config.seed=14", "y"),
                                              sweep.parse_run("c: --config.seed=3", "z")])
    assert calls == ["stop"]
    assert [(r["tag"], r["status"]) for r in _csv_rows(workdir)] == [("a", "done"), ("stop", "not run"),
                                                                      ("c", "not run")]


def test_results_table_takes_the_tasks_columns():
    # text classification sweeps report thesis Table 4.2's loss / accuracy / F1.
    run = sweep.Run("dct-0.25", ["--config.model.attention=dct-0.25"], "x:1")
    columns = sweep.task_columns("text_classification")[0]
    rows = [sweep.make_row(run, "done", {"loss": 0.29612, "accuracy": 0.889, "f1": 0.88897, "precision": 0.9},
                           columns)]
    md = sweep.format_markdown(rows, "t.sweep", "text_classification")
    assert "| tag | loss ↓ | accuracy ↑ | F1 ↑ | overrides |" in md
    assert "| dct-0.25 | 0.2961 | 0.8890 | 0.8890 | `--config.model.attention=dct-0.25` |" in md
    parsed = list(csv.DictReader(sweep.format_csv(rows, "text_classification").splitlines()))
    assert list(parsed[0]) == ["tag", "loss", "accuracy", "f1", "status", "overrides"]
    assert float(parsed[0]["accuracy"]) == 0.889
    dct_former = os.path.join(ROOT, "configs", "dct_former")
    planned = sweep.plan(os.path.join(dct_former, "long_range.py"),
                         sweep.parse_sweep_file(os.path.join(dct_former, "sweeps", "table42_long_range.sweep")))
    assert [r.tag for r, _ in planned][:3] == ["vanilla", "dct-0.25", "dct_ideal-0.25"]
    assert planned[1][1].model.attention == "dct-0.25" and planned[1][1].task == "text_classification"
