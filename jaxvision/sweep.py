"""`jaxvision sweep`: train and evaluate a list of runs, then write one results table in the reports' format.

    jaxvision sweep --config configs/segdepth/deeplabv3plus.py --workdir runs/table5 \\
        --sweep configs/segdepth/sweeps/002_table5_task_weights.txt [--run 'TAG: --config.a=1 ...'] \\
        [--config.train.num_steps=2000 ...] [--dry-run]

Sweep file: one run per line, `TAG: OVERRIDES`, where OVERRIDES are `--config.a.b=value` arguments
(split like a shell line, so values may be quoted); `#` starts a comment, blank lines are skipped.
TAG names the run's folder WORKDIR/TAG: letters, digits and `._+-`, starting with a letter or digit.

    # seed 002 Table 5: semantics / depth loss weights
    P1.1c_756bb: --config.loss.semseg_weight=0.2 --config.loss.depth_weight=0.8

Each run's config is `--config` with the run's overrides, then the command-line overrides (these win
and apply to every run). Every line is checked against the config before anything trains; an error
names the file and line. Runs go one after another, each a normal `train_and_evaluate` + `evaluate`
in WORKDIR/TAG. A run whose folder already has eval_metrics.json at its last step is skipped, an
unfinished one resumes from its latest checkpoint, and a folder holding a run of another config is an
error. A run that fails is reported and the sweep goes on. At the end (and after every run)
WORKDIR/results.md and WORKDIR/results.csv are rewritten atomically with the columns tag, the task's
`sweep_columns` (segdepth: semseg, depth, total -- the reports' scores on the validation split: 100 mIoU,
100 SI-log RMSE, their difference -- miou, silog_rmse; text_classification: loss, accuracy, f1 as the
thesis' Table 4.2), status and overrides.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shlex
import sys

from jaxvision.config import ConfigError, load_config, parse_overrides
from jaxvision.fileio import write_atomic

TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]*")
# Fields a run may change and still continue from its folder (a longer schedule resumes).
RESUMABLE_FIELDS = ("train.num_steps",)


class SweepError(ConfigError):
    """A malformed sweep line, a duplicated tag, or a run folder that belongs to another config."""


@dataclasses.dataclass
class Run:
    tag: str
    overrides: list[str]
    where: str  # "FILE:LINE" or "--run N", for messages


def parse_run(text: str, where: str) -> Run:
    """One `TAG: --config.a=1 ...` line (without comment) -> Run; SweepError naming `where`."""
    tag, sep, rest = text.partition(":")
    tag = tag.strip()
    if not sep:
        raise SweepError(f"{where}: expected 'TAG: --config.key=value ...', got '{text.strip()}'")
    if not TAG_PATTERN.fullmatch(tag):
        raise SweepError(f"{where}: tag '{tag}' must be letters, digits and ._+- starting with a letter or digit")
    try:
        overrides = shlex.split(rest)
        parse_overrides(overrides)
    except (ValueError, ConfigError) as e:
        raise SweepError(f"{where}: {e}") from None
    return Run(tag, overrides, where)


def parse_sweep_text(text: str, name: str) -> list[Run]:
    runs = []
    for number, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0]
        if body.strip():
            runs.append(parse_run(body, f"{name}:{number}"))
    return runs


def parse_sweep_file(path: str) -> list[Run]:
    if not os.path.isfile(path):
        raise SweepError(f"sweep file not found: {path}")
    with open(path) as f:
        return parse_sweep_text(f.read(), path)


def plan(config_path: str, runs: list[Run], common_overrides=()) -> list[tuple[Run, object]]:
    """(run, config) for every run, all checked before anything trains."""
    if not runs:
        raise SweepError("the sweep has no runs: give --sweep FILE with 'TAG: --config.key=value' lines or --run")
    load_config(config_path, common_overrides)  # errors of the command-line overrides are not a line's
    seen, planned = {}, []
    for run in runs:
        if run.tag in seen:
            raise SweepError(f"{run.where}: tag '{run.tag}' is already used at {seen[run.tag]}")
        seen[run.tag] = run.where
        try:
            config = load_config(config_path, [*run.overrides, *common_overrides])
        except ConfigError as e:
            raise SweepError(f"{run.where}: {e}") from None
        planned.append((run, config))
    return planned


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_status(run_dir: str, config) -> str:
    """'done' (eval_metrics.json at the last step), 'resume' (the folder has a run) or 'new'.

    SweepError when the folder's config.json differs from `config` outside RESUMABLE_FIELDS."""
    saved_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(saved_path):
        return "new"
    with open(saved_path) as f:
        saved = _flat(json.load(f))
    wanted = _flat(json.loads(config.to_json(sort_keys=True)))
    differ = sorted(k for k in saved.keys() | wanted.keys()
                    if k not in RESUMABLE_FIELDS and saved.get(k, "<absent>") != wanted.get(k, "<absent>"))
    if differ:
        key = differ[0]
        raise SweepError(f"{run_dir} holds a run of another config ({key} is {saved.get(key, '<absent>')!r} there, "
                         f"{wanted.get(key, '<absent>')!r} now; {len(differ)} fields differ): delete the folder or "
                         f"use another tag")
    metrics = read_eval_metrics(run_dir)
    if metrics is not None and metrics.get("step") == config.train.num_steps:
        return "done"
    return "resume"


def read_eval_metrics(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "eval_metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value else None  # NaN -> missing


def task_columns(task_name: str) -> tuple:
    """(sweep_columns, sweep_note) of the task `task_name`: which metrics the results table shows, and how."""
    from jaxvision.tasks import TASKS  # noqa: PLC0415
    task = TASKS[task_name]
    return task.sweep_columns, task.sweep_note


def make_row(run: Run, status: str, metrics: dict | None = None, columns: tuple = None) -> dict:
    """A results row: tag, status, overrides and the `columns` metrics (default: the segdepth task's)."""
    columns = columns or task_columns("segdepth")[0]
    row = {"tag": run.tag, "status": status, "overrides": " ".join(shlex.quote(o) for o in run.overrides)}
    row.update({k: _number((metrics or {}).get(k)) for k, _, _ in columns})
    return row


def format_markdown(rows: list[dict], title: str = "", task: str = "segdepth") -> str:
    """The results table: tag, the task's metric columns (segdepth: the reports' semseg / depth / total with 3
    decimals, mIoU, SI-log RMSE), the run's overrides; runs not done are listed below it with their status."""
    columns, note = task_columns(task)
    cell = lambda row, k, digits: "-" if row[k] is None else f"{row[k]:.{digits}f}"  # noqa: E731
    lines = [f"# {title}", ""] if title else []
    lines += ["| tag | " + " | ".join(header for _, header, _ in columns) + " | overrides |",
              "|---|" + "---|" * (len(columns) + 1)]
    for row in rows:
        overrides = row["overrides"].replace("|", "\\|")
        cells = " | ".join(cell(row, k, digits) for k, _, digits in columns)
        lines.append(f"| {row['tag']} | {cells} | `{overrides}` |")
    pending = [row for row in rows if row["status"] != "done"]
    if pending:
        lines.append("")
        lines += [f"- {row['tag']}: {row['status']}" for row in pending]
    lines += ["", note]
    return "\n".join(lines) + "\n"


def format_csv(rows: list[dict], task: str = "segdepth") -> str:
    fields = ("tag", *(k for k, _, _ in task_columns(task)[0]), "status", "overrides")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in fields})
    return out.getvalue()


def write_results(workdir: str, rows: list[dict], title: str = "", task: str = "segdepth") -> None:
    """WORKDIR/results.md and WORKDIR/results.csv, each replaced atomically."""
    write_atomic(os.path.join(workdir, "results.md"), format_markdown(rows, title, task))
    write_atomic(os.path.join(workdir, "results.csv"), format_csv(rows, task))


def run_sweep(config_path: str, workdir: str, runs: list[Run], common_overrides=(), dry_run: bool = False,
              title: str = "") -> list[dict]:
    """Trains + evaluates every unfinished run in WORKDIR/TAG and writes the results table.

    Returns the rows (status 'done', 'failed: ...', or 'not run'); with `dry_run` only checks every
    run and returns the planned status of each ('done', 'resume', 'new') without writing anything.
    """
    import jax

    from jaxvision.train.loop import Interrupted, evaluate, prepare_workdir, train_and_evaluate

    planned = plan(config_path, runs, common_overrides)
    task = planned[0][1].task if planned else "segdepth"
    columns = task_columns(task)[0]
    workdir = os.path.abspath(workdir)
    statuses = [run_status(os.path.join(workdir, run.tag), config) for run, config in planned]
    if dry_run:
        return [make_row(run, status, read_eval_metrics(os.path.join(workdir, run.tag)) if status == "done" else None,
                         columns)
                for (run, _), status in zip(planned, statuses)]
    prepare_workdir(workdir)
    writes = jax.process_index() == 0
    rows = [make_row(run, "not run", columns=columns) for run, _ in planned]
    for i, ((run, config), status) in enumerate(zip(planned, statuses)):
        run_dir = os.path.join(workdir, run.tag)
        head = f"[sweep {i + 1}/{len(planned)}] {run.tag}"
        if status == "done":
            print(f"{head}: finished earlier, skipped ({run_dir})", flush=True)
            rows[i] = make_row(run, "done", read_eval_metrics(run_dir), columns)
            continue
        print(f"{head}: {'resuming' if status == 'resume' else 'training'} in {run_dir} "
              f"{' '.join(run.overrides)}", flush=True)
        try:
            train_and_evaluate(config, run_dir)
            rows[i] = make_row(run, "done", evaluate(config, run_dir), columns)
        except Interrupted:
            if writes:
                write_results(workdir, rows, title, task)
            raise
        except Exception as e:  # noqa: BLE001  one broken run must not lose the others' results
            message = " ".join(str(e).split())[:300]
            print(f"jaxvision sweep: run {run.tag} failed: {type(e).__name__}: {message}", file=sys.stderr, flush=True)
            rows[i] = make_row(run, f"failed: {type(e).__name__}: {message}", columns=columns)
        if writes:
            write_results(workdir, rows, title, task)
    if writes:
        write_results(workdir, rows, title, task)
    return rows
