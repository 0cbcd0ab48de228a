"""`sentinel evaluate`: detection quality of the mesh on labelled CSVs, scored the NAB way.

Scoring follows the Numenta Anomaly Benchmark (NAB v1.1, `nab/sweeper.py` and the
normalisation step of `nab/runner.py`), standard profile, for binary detections:

- The first ``min(floor(0.15 * rows), 0.15 * 5000)`` rows of each file are *probationary*:
  neither detections nor window rows in them are scored (a window whose rows all lie in it is
  not scored either).
- Each labelled window ``[start, end]`` (timestamps of rows in the file) earns, if detected,
  the score of its **earliest** scored detection only: with ``width = right - left + 1`` rows
  and a detection on row ``i``, ``position = -(right - i + 1) / width`` (-1 at the first row of
  the window, -1/width at the last) and the row is worth
  ``A_TP * scaled_sigmoid(position) / scaled_sigmoid(-1)`` (exactly A_TP at the first row,
  about 0 at the last). Later detections in the same window neither earn nor cost anything.
- A window without a scored detection costs ``A_FN`` (-1).
- Every scored detection outside all windows costs ``0.11 * scaled_sigmoid(p)``-worth:
  after a window, ``p = (i - right_of_previous_window) / (width_of_previous_window - 1)``,
  so a detection just after a window costs almost nothing and one ``>= 1`` window width later
  costs about the full 0.11; before the first window of a file it costs the full 0.11.
- ``scaled_sigmoid(x) = 2 / (1 + exp(5 x)) - 1`` for ``x <= 3``, and -1 beyond.

The raw score of a file is the sum of its window scores and false-positive costs. Across the
corpus, ``normalised = 100 * (raw - null) / (perfect - null)`` where ``null`` is the raw score of
a detector that never fires (``A_FN`` times the scored windows) and ``perfect`` is ``A_TP``
times the number of windows (NAB counts every labelled window here). So the null detector
scores 0 and a detector that fires exactly once, on the first row of every window, 100.

What counts as a detection (``--detections``):

- ``alerts`` (default): the rows where the orchestrator **opens an alert** — an anomalous
  verdict while the sensor has no open incident. An incident stays open until
  ``resolve_after`` (``SENTINEL_RESOLVE_AFTER``) consecutive non-anomalous verdicts have
  followed; ``alert_opens`` replays exactly the state machine of
  ``orchestrator/incidents.IncidentTracker`` over the verdict rows of each file (each file is
  its own sensor, so incidents never span files). This is what a user of alerts sees: one
  detection per event.
- ``verdicts``: every anomalous verdict row is a detection (what a point-wise consumer sees).

Verdict rows missing from the replay (``status == missing``, only after a reconnect) count as
not anomalous and are reported.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sentinel.replay import parse_timestamp, read_series

PROBATION_PERCENT = 0.15


@dataclass(frozen=True, slots=True)
class CostProfile:
    """NAB cost matrix as signed rewards: A_TP, A_FP (per full-cost false positive), A_FN."""

    tp: float = 1.0
    fp: float = -0.11
    fn: float = -1.0


STANDARD = CostProfile()


def scaled_sigmoid(position: float) -> float:
    """NAB's reward curve: ~+0.987 at -1 (window start), 0 at 0, ~-0.987 at +1, -1 beyond 3."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probationary_length(rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file that are not scored: min(floor(p * rows), p * 5000)."""
    return math.ceil(min(math.floor(percent * rows), percent * 5000))


@dataclass(frozen=True, slots=True)
class FileScore:
    name: str
    rows: int
    probationary: int
    windows: int  # labelled windows of the file (what `perfect` counts)
    scored_windows: int  # windows with at least one row after the probationary period
    tp_windows: int  # scored windows with a scored detection
    fn_windows: int  # scored windows without one
    fp: int  # scored detections outside every window
    detections: int  # scored detections (in and out of windows)
    raw: float
    tp_score: float  # sum of the earned window rewards
    fp_score: float  # sum of the false-positive costs (<= 0)
    fn_score: float  # sum of the missed-window costs (<= 0)
    null: float  # raw score of a detector that never fires: A_FN * scored windows
    perfect: float  # NAB's perfect score: A_TP * windows


def window_rows(
    timestamps: Sequence, windows: Sequence[tuple], name: str = ""
) -> list[tuple[int, int]]:
    """Row ranges [left, right] of windows given as (start, end) timestamps of rows in the file.

    As in NAB, a window's left edge is the first row whose timestamp equals `start`, its right
    edge the first row whose timestamp equals `end`. Windows must be in file order and disjoint.
    """
    first: dict = {}
    for i, stamp in enumerate(timestamps):
        first.setdefault(stamp, i)
    result: list[tuple[int, int]] = []
    for start, end in windows:
        where = f"{name}: window [{start}, {end}]"
        if start not in first or end not in first:
            missing = start if start not in first else end
            raise ValueError(f"{where}: timestamp {missing} is not a row of the file")
        left, right = first[start], first[end]
        if right < left:
            raise ValueError(f"{where}: ends before it starts")
        if result and left <= result[-1][1]:
            raise ValueError(f"{where}: overlaps or precedes the previous window")
        result.append((left, right))
    return result


def score_file(
    rows: int,
    windows: Sequence[tuple[int, int]],
    detections: Sequence[int],
    profile: CostProfile = STANDARD,
    probation_percent: float = PROBATION_PERCENT,
    name: str = "",
) -> FileScore:
    """NAB score of one file. Pure: `windows` are row ranges [left, right] (inclusive, sorted,
    disjoint; see `window_rows`), `detections` the row indices where the detector fired."""
    probation = probationary_length(rows, probation_percent)
    max_tp = scaled_sigmoid(-1.0)
    fp_weight = abs(profile.fp)
    for left, right in windows:
        if not (0 <= left <= right < rows):
            raise ValueError(f"{name}: window rows [{left}, {right}] outside 0..{rows - 1}")
    scored = sorted({int(i) for i in detections if probation <= int(i) < rows})

    tp_score = fp_score = fn_score = 0.0
    tp_windows = fn_windows = fp = 0
    scored_windows = 0
    w = 0  # index of the first window whose right edge is >= the current detection
    best: dict[int, float] = {}
    for i in scored:
        while w < len(windows) and windows[w][1] < i:
            w += 1
        if w < len(windows) and windows[w][0] <= i:
            left, right = windows[w]
            width = right - left + 1
            reward = scaled_sigmoid(-(right - i + 1) / width) * profile.tp / max_tp
            best[w] = max(best.get(w, -math.inf), reward)
            continue
        fp += 1
        if w == 0:
            # No window before this row: as far from one as can be.
            unweighted = -1.0
        else:
            prev_left, prev_right = windows[w - 1]
            prev_width = prev_right - prev_left + 1
            # NAB divides by (width - 1); a one-row window would divide by zero there.
            position = (i - prev_right) / (prev_width - 1) if prev_width > 1 else math.inf
            unweighted = scaled_sigmoid(position)
        fp_score += unweighted * fp_weight
    for index, (_, right) in enumerate(windows):
        if right < probation:
            continue  # wholly probationary: not scored (but still counted by `perfect`)
        scored_windows += 1
        if index in best:
            tp_windows += 1
            tp_score += best[index]
        else:
            fn_windows += 1
            fn_score += profile.fn
    return FileScore(
        name=name,
        rows=rows,
        probationary=probation,
        windows=len(windows),
        scored_windows=scored_windows,
        tp_windows=tp_windows,
        fn_windows=fn_windows,
        fp=fp,
        detections=len(scored),
        raw=tp_score + fp_score + fn_score,
        tp_score=tp_score,
        fp_score=fp_score,
        fn_score=fn_score,
        null=scored_windows * profile.fn,
        perfect=len(windows) * profile.tp,
    )


@dataclass(frozen=True, slots=True)
class CorpusScore:
    files: list[FileScore]
    raw: float
    null: float
    perfect: float

    @property
    def normalised(self) -> float | None:
        """100 * (raw - null) / (perfect - null); None when there is no window to score."""
        if self.perfect == self.null:
            return None
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def score_corpus(files: Sequence[FileScore]) -> CorpusScore:
    return CorpusScore(
        files=list(files),
        raw=sum(f.raw for f in files),
        null=sum(f.null for f in files),
        perfect=sum(f.perfect for f in files),
    )


def alert_opens(anomaly: Sequence[bool], resolve_after: int) -> list[int]:
    """Rows where an alert opens, with the hysteresis of `orchestrator.incidents.IncidentTracker`:
    an anomalous row opens an incident if none is open; an open incident resolves after
    `resolve_after` consecutive non-anomalous rows (an anomalous row resets the count)."""
    if resolve_after < 1:
        raise ValueError("resolve_after must be >= 1")
    opens: list[int] = []
    is_open = False
    quiet = 0
    for i, flag in enumerate(anomaly):
        if flag:
            if not is_open:
                opens.append(i)
                is_open = True
            quiet = 0
        elif is_open:
            quiet += 1
            if quiet >= resolve_after:
                is_open = False
                quiet = 0
    return opens


# --- running the mesh over a directory ---------------------------------------------------------


@dataclass
class Evaluation:
    corpus: CorpusScore
    mode: str
    resolve_after: int
    seconds: float
    missing_rows: int = 0
    skipped: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)


def load_windows(path: Path) -> dict[str, list[tuple[str, str]]]:
    """NAB `windows.json`: {"dir/file.csv": [[start, end], ...], ...}."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of file -> list of [start, end]")
    windows: dict[str, list[tuple[str, str]]] = {}
    for key, items in data.items():
        pairs = []
        for item in items:
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise ValueError(f"{path}: {key}: each window must be [start, end], got {item!r}")
            pairs.append((str(item[0]), str(item[1])))
        windows[key.replace("\\", "/")] = pairs
    return windows


def match_files(
    root: Path, windows: Mapping[str, list]
) -> tuple[list[tuple[Path, str]], list[str]]:
    """CSV files under `root` paired with their windows key; files with no key are returned apart.

    A file matches the key equal to its path relative to `root`, or else the one key that ends
    with "/<relative path>" (so DIR may be one category of the corpus)."""
    matched, skipped = [], []
    for path in sorted(root.rglob("*.csv")):
        relative = path.relative_to(root).as_posix()
        if relative in windows:
            matched.append((path, relative))
            continue
        candidates = [key for key in windows if key.endswith("/" + relative)]
        if len(candidates) == 1:
            matched.append((path, candidates[0]))
        else:
            skipped.append(relative)
    return matched, skipped


def detections_from_verdicts(
    verdict_csv: Path, mode: str, resolve_after: int
) -> tuple[list[int], int, int]:
    """(detection rows, rows, missing rows) from a `sentinel replay` verdict file."""
    anomaly: list[bool] = []
    missing = 0
    with verdict_csv.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["status"] == "missing":
                missing += 1
            anomaly.append(row["anomaly"] == "1")
    if mode == "verdicts":
        return [i for i, flag in enumerate(anomaly) if flag], len(anomaly), missing
    return alert_opens(anomaly, resolve_after), len(anomaly), missing


SETTING_NAMES = (
    "SENTINEL_COMBINE_POLICY",
    "SENTINEL_COMBINE_WEIGHTS",
    "SENTINEL_RESOLVE_AFTER",
    "SENTINEL_STATISTICAL_WINDOW",
    "SENTINEL_STATISTICAL_CUTOFF",
    "SENTINEL_MODEL_PATH",
    "SENTINEL_THRESHOLD_RULES_FILE",
)


async def evaluate(
    root: Path,
    windows_path: Path,
    mode: str = "alerts",
    batch_size: int = 500,
    verdicts_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Replay every labelled CSV under `root` through one embedded mesh and score it."""
    import time

    from orchestrator.settings import OrchestratorSettings
    from sentinel.embedded import embedded_mesh
    from sentinel.replay import replay

    if mode not in ("alerts", "verdicts"):
        raise ValueError(f"detections must be alerts or verdicts, not {mode!r}")
    windows = load_windows(windows_path)
    matched, skipped = match_files(root, windows)
    if not matched:
        raise ValueError(f"no CSV under {root} has an entry in {windows_path}")
    # The same settings (env SENTINEL_*) the embedded orchestrator reads; pinned so both agree.
    resolve_after = OrchestratorSettings().resolve_after
    started = time.monotonic()
    scores: list[FileScore] = []
    missing_total = 0
    with tempfile.TemporaryDirectory(prefix="sentinel-evaluate-") as scratch:
        out_dir = verdicts_dir or Path(scratch)
        async with embedded_mesh(resolve_after=resolve_after) as target:
            for path, key in matched:
                series = read_series(path)
                if len(set(series.sensor_ids)) > 1:
                    raise ValueError(
                        f"{path}: one series per file expected (its sensor_id column has several)"
                    )
                # A distinct sensor per file, so windows and incidents never mix across files.
                series.sensor_ids = [key] * len(series.values)
                out = out_dir / (key.replace("/", "__").removesuffix(".csv") + ".verdicts.csv")
                out.parent.mkdir(parents=True, exist_ok=True)
                await replay(series, target, out, batch_size)
                detections, rows, missing = detections_from_verdicts(out, mode, resolve_after)
                missing_total += missing
                limits = [(parse_timestamp(a), parse_timestamp(b)) for a, b in windows[key]]
                spans = window_rows(series.timestamps.tolist(), limits, key)
                score = score_file(rows, spans, detections, name=key)
                scores.append(score)
                if progress:
                    progress(f"{key}: {rows} rows, raw {score.raw:+.3f}")
    return Evaluation(
        corpus=score_corpus(scores),
        mode=mode,
        resolve_after=resolve_after,
        seconds=time.monotonic() - started,
        missing_rows=missing_total,
        skipped=skipped,
        settings={name: os.environ[name] for name in SETTING_NAMES if name in os.environ},
    )


REPORT_COLUMNS = ("file", "rows", "windows", "tp_windows", "fn", "fp", "detections", "raw_score")


def report_rows(corpus: CorpusScore) -> list[list[str]]:
    rows = [
        [f.name, str(f.rows), str(f.windows), str(f.tp_windows), str(f.fn_windows), str(f.fp),
         str(f.detections), f"{f.raw:.4f}"]
        for f in corpus.files
    ]  # fmt: skip
    files = corpus.files
    rows.append(
        ["TOTAL", str(sum(f.rows for f in files)), str(sum(f.windows for f in files)),
         str(sum(f.tp_windows for f in files)), str(sum(f.fn_windows for f in files)),
         str(sum(f.fp for f in files)), str(sum(f.detections for f in files)), f"{corpus.raw:.4f}"]
    )  # fmt: skip
    return rows


def render(evaluation: Evaluation) -> str:
    corpus = evaluation.corpus
    rows = [list(REPORT_COLUMNS), *report_rows(corpus)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(REPORT_COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)),
        ]
        if n == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(cells))
    normalised = corpus.normalised
    settings = " ".join(f"{k}={v}" for k, v in evaluation.settings.items()) or "defaults"
    lines += [
        "",
        f"detections: {evaluation.mode} (resolve_after={evaluation.resolve_after}); "
        f"settings: {settings}",
        f"raw {corpus.raw:.4f}, null {corpus.null:.4f}, perfect {corpus.perfect:.4f}",
        "NAB standard-profile score (normalised, null = 0, perfect = 100): "
        + ("n/a (no labelled windows)" if normalised is None else f"{normalised:.2f}"),
        f"{len(corpus.files)} files in {evaluation.seconds:.1f} s",
    ]
    if evaluation.missing_rows:
        lines.append(
            f"warning: {evaluation.missing_rows} rows had no verdict (counted as not anomalous)"
        )
    if evaluation.skipped:
        lines.append(f"not scored (no entry in the windows file): {', '.join(evaluation.skipped)}")
    return "\n".join(lines)


def write_report(path: Path, evaluation: Evaluation) -> None:
    corpus = evaluation.corpus
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*REPORT_COLUMNS, "normalised_score"])
        for row in report_rows(corpus):
            is_total = row[0] == "TOTAL"
            normalised = corpus.normalised if is_total else None
            writer.writerow([*row, "" if normalised is None else f"{normalised:.4f}"])


def run(
    root: Path,
    windows_path: Path,
    mode: str = "alerts",
    out: Path | None = None,
    batch_size: int = 500,
    verdicts_dir: Path | None = None,
) -> Evaluation:
    evaluation = asyncio.run(evaluate(root, windows_path, mode, batch_size, verdicts_dir))
    if out is not None:
        write_report(out, evaluation)
    return evaluation
