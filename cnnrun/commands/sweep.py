"""Tables over many runs: the summary every multirun ends with, and `cnnrun compare`."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from rich.markup import escape
from rich.table import Table

from cnnrun import CnnrunError, record
from cnnrun.record import files, layout
from cnnrun.console import console, error, show
from cnnrun.config.redact import redact
from cnnrun.record.outcome import EXIT_CONFIG, EXIT_FAILED

METRIC_COLUMNS = ["test_acc", "article", "diff", "best_val", "train_s", "img_per_s", "params", "data", "status",
                  "error"]  # data: the digest of what the run read (record.data_digest), its first 8 characters


def find_runs(path: Path) -> list[Path]:
    """Run directories (those holding metrics.json) at or below `path`."""
    path = Path(path)
    if (path / layout.METRICS).is_file():
        return [path]
    found = (p.parent for p in path.rglob(layout.METRICS))  # earlier runs set aside (X.earlier-N) are not this sweep's
    return sorted((p for p in found if ".earlier-" not in str(p.relative_to(path))), key=lambda p: str(p))


NUMBERS = ("test_accuracy", "reference_accuracy", "best_val_accuracy", "train_seconds", "images_per_second")


def _one_line(text, limit: int = 200) -> str:
    """An error as a table shows it: its first line, at most `limit` characters."""
    first = (str(text).strip().splitlines() or [""])[0]
    return first if len(first) <= limit else first[:limit - 1] + "…"


def read_run(run_dir: Path) -> dict:
    """metrics.json plus the overrides Hydra recorded for the run. A record edited into nonsense (a number that
    is not one, an override file that is not a list) is shown as what it is, never a crash."""
    import math

    metrics = record.read(run_dir) or {"status": "unreadable", "error": f"{run_dir} has no metrics.json"}
    for key in NUMBERS:
        v = metrics.get(key)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            metrics[key] = None
            metrics["status"], metrics["error"] = "unreadable", f"{key}={_one_line(v, 40)!s} in metrics.json is not a number"
    overrides = {}
    file = layout.overrides(run_dir)
    try:
        items = yaml.safe_load(file.read_text(encoding="utf-8")) if file.is_file() else []
    except (OSError, ValueError, yaml.YAMLError):
        items = []
    for item in items if isinstance(items, list) else []:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    return {"run": run_dir, "overrides": overrides, "metrics": metrics}


def _pct(v):
    return "" if v is None else f"{100 * v:.2f}"


def table_rows(runs: list[dict], base: Path | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the overrides that vary between runs, then the metrics; best test accuracy first."""
    keys = sorted({k for r in runs for k in r["overrides"]})
    varying = [k for k in keys if len({r["overrides"].get(k) for r in runs}) > 1] or keys
    runs = sorted(runs, key=lambda r: -(r["metrics"].get("test_accuracy") or -1))
    rows = []
    for r in runs:
        m = r["metrics"]
        acc, ref = m.get("test_accuracy"), m.get("reference_accuracy")
        name = str(r["run"].relative_to(base)) if base and r["run"].is_relative_to(base) else str(r["run"])
        rows.append(
            [name]
            + [r["overrides"].get(k, "") for k in varying]
            + [
                _pct(acc),
                _pct(ref),
                ("shortened" if m.get("shortened") else f"{100 * (acc - ref):+.2f}") if acc is not None and ref else "",
                _pct(m.get("best_val_accuracy")),
                f"{m['train_seconds']:.1f}" if m.get("train_seconds") is not None else "",
                f"{m['images_per_second']:.0f}" if m.get("images_per_second") else "",
                _one_line(m.get("params", ""), 20),
                str(m.get("data_digest") or "")[:8],
                _one_line(m.get("status", ""), 20),
                _one_line(m.get("error", "") or ""),
            ]
        )
    return ["run"] + varying + METRIC_COLUMNS, rows


@dataclass(frozen=True)
class SeedGroup:
    """Runs that differ only in trainer.seed: their test accuracy's mean and standard deviation (fractions)."""
    config: str        # the overrides that tell the group apart, or "(all)"
    seeds: int
    mean: float
    std: float
    reference: float | None

    def row(self) -> list[str]:
        return [self.config, str(self.seeds), f"{100 * self.mean:.2f} ± {100 * self.std:.2f}", _pct(self.reference)]


SEED_COLUMNS = ["config", "seeds", "test_acc (mean ± std)", "article"]


def seed_groups(runs: list[dict]) -> list[SeedGroup]:
    """Mean ± std of test accuracy over runs that differ only in trainer.seed, best first."""
    keys = {k for r in runs for k in r["overrides"] if k != "trainer.seed"}
    varying = {k for k in keys if len({r["overrides"].get(k) for r in runs}) > 1}  # the label names only these
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        key = tuple(sorted((k, v) for k, v in r["overrides"].items() if k in varying))
        groups.setdefault(key, []).append(r)
    found = []
    for key, members in groups.items():
        accs = [m["metrics"]["test_accuracy"] for m in members if m["metrics"].get("test_accuracy") is not None]
        if len(members) < 2 or not accs:
            continue
        found.append(SeedGroup(" ".join(f"{k}={v}" for k, v in key) or "(all)", len(accs), statistics.mean(accs),
                               statistics.stdev(accs) if len(accs) > 1 else 0.0,
                               members[0]["metrics"].get("reference_accuracy")))
    return sorted(found, key=lambda g: -g.mean)


def markdown(header, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(title, header, rows) -> None:
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="right" if h in METRIC_COLUMNS[:7] or h == "seeds" else "left",
                         overflow="ellipsis" if h == "error" else "fold", no_wrap=h == "error",
                         max_width=48 if h == "error" else None)  # an error's whole line is in the CSV
    for row in rows:
        style = None if row[header.index("status")] == "ok" else "red"
        table.add_row(*(escape(redact(c)) for c in row), style=style)  # logger=[a,b] is text, not rich markup
    show(table)


def summarize(paths: list[Path], out: Path, stem: str, title: str,
              refused: dict[str, str] | None = None) -> tuple[list[dict], list[SeedGroup]]:
    """Writes {stem}.csv and {stem}.md into `out` and prints the table(s); returns the runs (read_run's, with
    their records) and the seed groups.
    `refused` ({job directory name: reason}) shows those jobs as refused, not with the record they found."""
    runs = [read_run(run) for p in paths for run in find_runs(p)]
    for r in runs:
        if refused and r["run"].name in refused:
            r["metrics"] = {"status": "refused", "error": refused[r["run"].name]}
    if not runs:
        console.print(f"no runs (metrics.json) found under {', '.join(map(str, paths))}")
        return [], []
    base = paths[0] if len(paths) == 1 else None
    header, rows = table_rows(runs, base)
    groups = seed_groups(runs)
    s_header, s_rows = SEED_COLUMNS, [g.row() for g in groups]
    out.mkdir(parents=True, exist_ok=True)
    files.write_csv(out / f"{stem}.csv", header, rows)
    md = f"# {title}\n\n" + markdown(header, rows)
    if s_rows:
        md += "\n## Across seeds\n\n" + markdown(s_header, s_rows)
    files.write_text(out / f"{stem}.md", md)
    shown = rows if len(rows) <= CONSOLE_ROWS else rows[:CONSOLE_ROWS]  # best first: the rest are in the files
    print_table(title if shown is rows else f"{title} · best {CONSOLE_ROWS} of {len(rows)}", header, shown)
    if s_rows:
        table = Table(title="across seeds")
        for h in s_header:
            table.add_column(h)
        for row in s_rows:
            table.add_row(*(escape(c) for c in row))
        show(table)
    console.print(one_line_summary(runs, rows, header), highlight=False)
    console.print(f"written: {out / (stem + '.csv')}, {out / (stem + '.md')}")
    return runs, groups


CONSOLE_ROWS = 20  # a longer table is cut to its best rows on the console; the files hold every row


def one_line_summary(runs: list[dict], rows: list[list[str]], header: list[str]) -> str:
    """The sweep in one line, last: how many runs ended how, and the best one (rows come best first)."""
    counts: dict[str, int] = {}
    for r in runs:
        status = str(r["metrics"].get("status", "unknown"))
        counts[status] = counts.get(status, 0) + 1
    ended = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])))
    best = next((row for row in rows if row[header.index("test_acc")]), None)
    varying = header[1:header.index("test_acc")]
    what = " ".join(f"{k}={v}" for k, v in zip(varying, best[1:1 + len(varying)]) if v) if best else ""
    tail = f"; best test accuracy {best[header.index('test_acc')]} % ({what or best[0]})" if best else ""
    return f"{len(runs)} run{'s' if len(runs) != 1 else ''}: {ended}{tail}"


REFUSED = layout.REFUSED  # in a sweep directory while it runs: the jobs refused their directory, a line each


def note_refused(sweep_dir: Path, job: str, reason: str) -> None:
    """Records that job `job` (its directory's name) was refused, for the sweep's summary and exit code."""
    import fcntl
    import json

    with open(Path(sweep_dir) / REFUSED, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # parallel jobs append whole lines
        f.write(json.dumps({"job": job, "reason": reason}) + "\n")


def take_refused(sweep_dir: Path) -> dict[str, str]:
    """The refused jobs noted during this sweep ({job directory name: reason}); the note is removed."""
    import json

    path = Path(sweep_dir) / REFUSED
    out = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
                out[str(item["job"])] = str(item["reason"])
            except (ValueError, KeyError, TypeError):
                continue
        path.unlink()
    except OSError:
        pass
    return out


class SweepSummary(Callback):
    """Hydra callback: after every multirun, summary.csv / summary.md in the sweep directory and a table.

    `not_ok` counts the jobs that did not end ok, so `cnnrun train -m` can exit 1 after the summary."""

    not_ok = 0

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            refused = take_refused(sweep_dir)  # their directories hold another run's record: not this sweep's result
            runs, groups = summarize([sweep_dir], sweep_dir, "summary", f"sweep {sweep_dir}", refused)
            SweepSummary.not_ok = sum(1 for r in runs if r["metrics"].get("status") != "ok")
            if refused:
                error(f"{len(refused)} job(s) of this sweep were refused (their directories hold other runs); "
                      "nothing of theirs ran: see the summary")
            from cnnrun.hooks import loggers  # the MLflow parent run, when the jobs logged there

            loggers.end_sweep(sweep_dir, len(runs), len(runs) - SweepSummary.not_ok, groups,
                              [sweep_dir / layout.SUMMARY_MD, sweep_dir / layout.SUMMARY_CSV, sweep_dir / layout.MULTIRUN])


def compare_main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="cnnrun compare", description="One table for runs and sweep directories.")
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or sweep directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where comparison.csv/.md go (default: outputs/compare/DATE/TIME, as runs go to outputs/)")
    ns = parser.parse_args(args)
    if ns.out is None:
        from datetime import datetime

        ns.out = Path("outputs") / "compare" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    missing = [str(p) for p in ns.paths if not p.exists()]
    if missing:
        parser.error(f"no such run or sweep directory: {', '.join(missing)}")
    try:
        found, _ = summarize(ns.paths, ns.out, "comparison", "comparison")
    except (CnnrunError, OSError) as e:
        error(f"cannot write the comparison into --out {ns.out}: {getattr(e, 'strerror', None) or e}; "
              "give a writable folder, e.g. --out .")
        raise SystemExit(EXIT_CONFIG) from None
    if not found:
        raise SystemExit(EXIT_FAILED)
