"""`sentinel evaluate`: detection quality of the mesh on labelled CSVs, scored the NAB way.

Scoring follows the Numenta Anomaly Benchmark (NAB v1.1, `nab/sweeper.py` and the
normalisation step of `nab/runner.py`) for binary detections, under NAB's three cost profiles
(`config/profiles.json`; A_TP, A_FP, A_FN): ``standard`` (1, -0.11, -1), ``reward_low_FP_rate``
(1, -0.22, -1) and ``reward_low_FN_rate`` (1, -0.11, -2). One replay is scored under all three.

- The first ``min(floor(0.15 * rows), 0.15 * 5000)`` rows of each file are *probationary*:
  neither detections nor window rows in them are scored (a window whose rows all lie in it is
  not scored either).
- Each labelled window ``[start, end]`` (timestamps of rows in the file) earns, if detected,
  the score of its **earliest** scored detection only: with ``width = right - left + 1`` rows
  and a detection on row ``i``, ``position = -(right - i + 1) / width`` (-1 at the first row of
  the window, -1/width at the last) and the row is worth
  ``A_TP * scaled_sigmoid(position) / scaled_sigmoid(-1)`` (exactly A_TP at the first row,
  about 0 at the last). Later detections in the same window neither earn nor cost anything.
- A window without a scored detection costs ``A_FN``.
- Every scored detection outside all windows costs ``|A_FP| * scaled_sigmoid(p)``-worth:
  after a window, ``p = (i - right_of_previous_window) / (width_of_previous_window - 1)``,
  so a detection just after a window costs almost nothing and one ``>= 1`` window width later
  costs about the full ``|A_FP|``; before the first window of a file it costs the full ``|A_FP|``.
- ``scaled_sigmoid(x) = 2 / (1 + exp(5 x)) - 1`` for ``x <= 3``, and -1 beyond.

The raw score of a file is the sum of its window scores and false-positive costs. Across the
corpus, ``normalised = 100 * (raw - null) / (perfect - null)`` where ``null`` is the raw score of
a detector that never fires (``A_FN`` times the scored windows) and ``perfect`` is ``A_TP``
times the number of windows (NAB counts every labelled window here). So the null detector
scores 0 and a detector that fires exactly once, on the first row of every window, 100.

What counts as a detection (``--detections``), read from the `sentinel replay` verdict file:

- ``alerts`` (default): the rows whose ``alert`` column is ``open`` — the reading whose verdict
  made the orchestrator open an alert. The incident logic is the orchestrator's own (settings
  ``SENTINEL_*``); each file is its own sensor, so incidents never span files. This is what a
  user of alerts sees: one detection per event.
- ``verdicts``: every anomalous verdict row is a detection (what a point-wise consumer sees).

Verdict rows missing from the replay (``status == missing``, only after a reconnect) count as
not anomalous and are reported.

With shadows (``--shadow NAME=TARGET``), the same replay also scores, per shadow, the verdict
with the shadow in NAME's place (its ``NAME_shadow_verdict`` / ``NAME_shadow_alert`` columns):
both scores come from one pass over the data, side by side, with the two engines' row-by-row
agreement. Rows a shadow did not answer count as not detected by it, and are reported.

Reusable pieces (pure unless noted): `score_file` / `score_profiles` (one file),
`score_corpus` (a list of one profile's FileScores, e.g. one category's), `category`,
`score_verdicts` (reads a verdict file) and `evaluate` / `run` (replays a directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel.app.replay import Series, parse_timestamp, read_series

MODES = ("alerts", "verdicts")

PROBATION_PERCENT = 0.15


@dataclass(frozen=True, slots=True)
class CostProfile:
    """NAB cost matrix as signed rewards: A_TP, A_FP (per full-cost false positive), A_FN."""

    tp: float = 1.0
    fp: float = -0.11
    fn: float = -1.0


# NAB v1.1 `config/profiles.json` (tpWeight, fpWeight, fnWeight), as signed rewards.
PROFILES: dict[str, CostProfile] = {
    "standard": CostProfile(tp=1.0, fp=-0.11, fn=-1.0),
    "reward_low_FP_rate": CostProfile(tp=1.0, fp=-0.22, fn=-1.0),
    "reward_low_FN_rate": CostProfile(tp=1.0, fp=-0.11, fn=-2.0),
}
STANDARD = PROFILES["standard"]
LOW_FP = PROFILES["reward_low_FP_rate"]
LOW_FN = PROFILES["reward_low_FN_rate"]


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


def score_profiles(
    rows: int,
    windows: Sequence[tuple[int, int]],
    detections: Sequence[int],
    profiles: Mapping[str, CostProfile] = PROFILES,
    probation_percent: float = PROBATION_PERCENT,
    name: str = "",
) -> dict[str, FileScore]:
    """`score_file` of the same detections under each profile (by profile name). Pure."""
    return {
        profile_name: score_file(rows, windows, detections, profile, probation_percent, name)
        for profile_name, profile in profiles.items()
    }


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
    """Sum of the files' raw, null and perfect scores (all under the same profile)."""
    return CorpusScore(
        files=list(files),
        raw=sum(f.raw for f in files),
        null=sum(f.null for f in files),
        perfect=sum(f.perfect for f in files),
    )


def category(key: str) -> str:
    """A file's category: the first path component of its windows key (`realTweets/x.csv` ->
    `realTweets`); "" for a key without a directory."""
    head, sep, _ = key.partition("/")
    return head if sep else ""


# --- verdict files ------------------------------------------------------------------------------


@dataclass
class ShadowColumns:
    """One shadow's columns of a verdict file (see `sentinel.replay.write_verdicts`); None
    where the cell is empty."""

    own_flag: list[bool | None]  # the shadowed specialist's own vote
    flag: list[bool | None]  # the shadow's vote
    verdict: list[bool | None]  # the verdict with the shadow in the specialist's place
    alerts: list[str]

    def detections(self, mode: str) -> list[int]:
        if mode == "alerts":
            return [i for i, cell in enumerate(self.alerts) if "open" in cell.split(";")]
        if mode == "verdicts":
            return [i for i, flag in enumerate(self.verdict) if flag]
        raise ValueError(f"detections must be one of {', '.join(MODES)}, not {mode!r}")

    @property
    def unanswered(self) -> int:
        return sum(v is None for v in self.verdict)

    def agreement(self) -> Agreement:
        pairs = [
            (bool(a), bool(b))
            for a, b in zip(self.own_flag, self.flag, strict=True)
            if a is not None and b is not None
        ]
        return Agreement(
            compared=len(pairs),
            both=sum(a and b for a, b in pairs),
            only_primary=sum(a and not b for a, b in pairs),
            only_shadow=sum(b and not a for a, b in pairs),
        )


@dataclass(frozen=True, slots=True)
class Agreement:
    """A specialist's and its shadow's votes on the rows both voted on."""

    compared: int = 0
    both: int = 0
    only_primary: int = 0
    only_shadow: int = 0

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(
            self.compared + other.compared,
            self.both + other.both,
            self.only_primary + other.only_primary,
            self.only_shadow + other.only_shadow,
        )


def _flag(cell: str) -> bool | None:
    return None if cell == "" else cell == "1"


@dataclass
class VerdictTable:
    """The columns of a `sentinel replay` verdict file that evaluation and plots use."""

    timestamps: list[str]
    values: list[float]
    anomaly: list[bool]
    alerts: list[str] | None  # None: a file written before replay had an alert column
    missing: int
    likelihoods: dict[str, list[float]]  # specialist -> per row (NaN where the cell is empty)
    degraded: int = 0  # rows some specialist did not vote on (status degraded)
    shadows: dict[str, ShadowColumns] = field(default_factory=dict)  # by shadowed specialist

    @property
    def rows(self) -> int:
        return len(self.values)

    def alert_rows(self, event: str = "open") -> list[int]:
        """Rows whose alert cell holds `event` (`open` or `resolved`)."""
        if self.alerts is None:
            raise ValueError("the verdict file has no alert column (written by an older replay)")
        return [i for i, cell in enumerate(self.alerts) if event in cell.split(";")]

    def detections(self, mode: str) -> list[int]:
        if mode == "alerts":
            return self.alert_rows("open")
        if mode == "verdicts":
            return [i for i, flag in enumerate(self.anomaly) if flag]
        raise ValueError(f"detections must be one of {', '.join(MODES)}, not {mode!r}")


def read_verdicts(path: Path) -> VerdictTable:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        missing_columns = {"timestamp", "value", "anomaly", "status"} - set(fields)
        if missing_columns:
            raise ValueError(
                f"{path}: not a verdict file (no {', '.join(sorted(missing_columns))})"
            )
        names = [f.removesuffix("_likelihood") for f in fields if f.endswith("_likelihood")]
        shadowed = [
            f.removesuffix("_shadow_verdict") for f in fields if f.endswith("_shadow_verdict")
        ]
        table = VerdictTable(
            [], [], [], [] if "alert" in fields else None, 0, {n: [] for n in names}
        )
        table.shadows = {n: ShadowColumns([], [], [], []) for n in shadowed}
        for row in reader:
            table.timestamps.append(row["timestamp"])
            table.values.append(float(row["value"]))
            table.anomaly.append(row["anomaly"] == "1")
            if row["status"] == "missing":
                table.missing += 1
            elif row["status"] == "degraded":
                table.degraded += 1
            if table.alerts is not None:
                table.alerts.append(row["alert"] or "")
            for name in names:
                cell = row[f"{name}_likelihood"]
                table.likelihoods[name].append(float(cell) if cell else math.nan)
            for name, columns in table.shadows.items():
                columns.own_flag.append(_flag(row[f"{name}_flag"]))
                columns.flag.append(_flag(row[f"{name}_shadow_flag"]))
                columns.verdict.append(_flag(row[f"{name}_shadow_verdict"]))
                columns.alerts.append(row[f"{name}_shadow_alert"])
    return table


@dataclass(frozen=True)
class FileResult:
    """One replayed file: what was detected and its score under each profile."""

    key: str  # windows key, e.g. realTweets/Twitter_volume_AAPL.csv
    rows: int
    windows: list[tuple[int, int]]  # row ranges of the labelled windows
    detections: list[int]  # rows counted as detections (all, probationary ones included)
    missing: int  # rows without a verdict
    scores: dict[str, FileScore]  # profile name -> score
    degraded: int = 0  # rows some specialist did not vote on
    # Per shadow (the specialist it shadows): the scores of the verdict with it in place, the
    # rows it did not answer, and its agreement with the specialist.
    shadow_scores: dict[str, dict[str, FileScore]] = field(default_factory=dict)
    shadow_unanswered: dict[str, int] = field(default_factory=dict)
    agreement: dict[str, Agreement] = field(default_factory=dict)

    @property
    def category(self) -> str:
        return category(self.key)


def score_verdicts(
    verdict_csv: Path,
    key: str,
    windows: Sequence[tuple[str, str]],
    mode: str = "alerts",
    profiles: Mapping[str, CostProfile] = PROFILES,
    probation_percent: float = PROBATION_PERCENT,
) -> FileResult:
    """Score a verdict file against its labelled windows (as `(start, end)` timestamp text)."""
    table = read_verdicts(verdict_csv)
    detections = table.detections(mode)
    stamps = [parse_timestamp(text) for text in table.timestamps]
    limits = [(parse_timestamp(a), parse_timestamp(b)) for a, b in windows]
    spans = window_rows(stamps, limits, key)
    return FileResult(
        key=key,
        rows=table.rows,
        windows=spans,
        detections=detections,
        missing=table.missing,
        degraded=table.degraded,
        scores=score_profiles(table.rows, spans, detections, profiles, probation_percent, key),
        shadow_scores={
            name: score_profiles(
                table.rows, spans, columns.detections(mode), profiles, probation_percent, key
            )
            for name, columns in table.shadows.items()
        },
        shadow_unanswered={name: c.unanswered for name, c in table.shadows.items()},
        agreement={name: c.agreement() for name, c in table.shadows.items()},
    )


def corpus_scores(files: Sequence[FileResult]) -> dict[str, CorpusScore]:
    """Profile name -> corpus score of `files` (e.g. all files, or all but one category)."""
    names = list(files[0].scores) if files else list(PROFILES)
    return {name: score_corpus([f.scores[name] for f in files]) for name in names}


# --- running the mesh over a directory ---------------------------------------------------------


@dataclass
class Evaluation:
    files: list[FileResult]
    corpora: dict[str, CorpusScore]  # profile name -> corpus score
    mode: str
    seconds: float
    target: str | None = None  # None: an embedded mesh
    sensor_prefix: str = ""
    skipped: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    # Per shadow: profile name -> corpus score of the verdict with the shadow in place.
    shadow_corpora: dict[str, dict[str, CorpusScore]] = field(default_factory=dict)

    @property
    def corpus(self) -> CorpusScore:
        """The standard profile's corpus score."""
        return self.corpora["standard"]

    @property
    def missing_rows(self) -> int:
        return sum(f.missing for f in self.files)

    @property
    def degraded_rows(self) -> int:
        return sum(f.degraded for f in self.files)

    def file_scores(self, profile: str = "standard") -> list[FileScore]:
        return [f.scores[profile] for f in self.files]

    def agreement(self, shadow: str) -> Agreement:
        return sum((f.agreement.get(shadow, Agreement()) for f in self.files), Agreement())

    def shadow_unanswered(self, shadow: str) -> int:
        return sum(f.shadow_unanswered.get(shadow, 0) for f in self.files)


def shadow_corpus_scores(files: Sequence[FileResult]) -> dict[str, dict[str, CorpusScore]]:
    """Per shadow, profile name -> corpus score of the verdict with that shadow in place."""
    shadows = list(files[0].shadow_scores) if files else []
    return {
        shadow: {
            name: score_corpus([f.shadow_scores[shadow][name] for f in files])
            for name in files[0].shadow_scores[shadow]
        }
        for shadow in shadows
    }


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


# Orchestrator / engine settings printed with the results (those set in the environment):
# these names, then any other SENTINEL_* variable of an engine family in SETTING_PREFIXES.
SETTING_NAMES = (
    "SENTINEL_COMBINE_POLICY",
    "SENTINEL_COMBINE_WEIGHTS",
    "SENTINEL_RESOLVE_AFTER",
    "SENTINEL_RESOLVE_AFTER_SECONDS",
    "SENTINEL_LIKELIHOOD_THRESHOLDS",
    "SENTINEL_ADAPTIVE_MARGIN",
    "SENTINEL_MODEL_PATH",
    "SENTINEL_THRESHOLD_RULES_FILE",
)
SETTING_PREFIXES = ("SENTINEL_STATISTICAL_", "SENTINEL_ADAPTIVE_", "SENTINEL_LIKELIHOOD_")


def detection_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The detection settings set in `environ` (default: os.environ), in a stable order."""
    environ = os.environ if environ is None else environ
    names = [name for name in SETTING_NAMES if name in environ]
    names += sorted(
        name for name in environ if name.startswith(SETTING_PREFIXES) and name not in SETTING_NAMES
    )
    return {name: environ[name] for name in names}


MAX_SENSOR_ID_LENGTH = 256  # the orchestrator's default limit


def default_sensor_prefix() -> str:
    """A prefix no earlier run used: `evaluate-<UTC time>-<random>/`."""
    return f"evaluate-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}/"


def verdict_file_name(key: str) -> str:
    return key.replace("/", "__").removesuffix(".csv") + ".verdicts.csv"


def plot_file_name(key: str) -> str:
    return key.replace("/", "__").removesuffix(".csv") + ".png"


@contextlib.asynccontextmanager
async def _mesh(target: str | None, settings: Mapping[str, Any]) -> AsyncIterator[str]:
    if target:
        yield target
        return
    from sentinel.app.local_mesh import embedded_mesh

    # A score must not depend on how busy the machine is: a Score call that misses a short
    # deadline would leave an engine out of some verdicts (degraded) and change detections.
    settings = {"specialist_timeout_seconds": 60.0, **settings}
    async with embedded_mesh(**settings) as local_target:
        yield local_target


# progress(done, total, current): before each file (`current` its key) and once at the end ("").
ProgressCallback = Callable[[int, int, str], None]


async def evaluate(
    root: Path,
    windows_path: Path,
    mode: str = "alerts",
    batch_size: int = 500,
    verdicts_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    *,
    target: str | None = None,
    sensor_prefix: str | None = None,
    plot_dir: Path | None = None,
    profiles: Mapping[str, CostProfile] = PROFILES,
    mesh_settings: Mapping[str, object] | None = None,
    shadows: Sequence[str] = (),
) -> Evaluation:
    """Replay every labelled CSV under `root` through one mesh and score it.

    The mesh is an embedded one (orchestrator settings from SENTINEL_* env, overridden by
    `mesh_settings`: OrchestratorSettings fields) or, with `target`, an already-running
    orchestrator. Each file is its own sensor, `sensor_prefix + windows key`; the prefix
    defaults to "" for an embedded mesh and to a fresh `default_sensor_prefix()` with `target`
    (a running mesh may hold history for earlier runs' sensor ids). `plot_dir`: one PNG per
    file (needs matplotlib). `shadows` (NAME=TARGET each, embedded mesh only): also score the
    verdict with each shadow in its specialist's place, from the same replay."""
    from sentinel.app.replay import replay, shadow_mesh_settings

    if mode not in MODES:
        raise ValueError(f"detections must be one of {', '.join(MODES)}, not {mode!r}")
    if target and (mesh_settings or shadows):
        raise ValueError("mesh settings and shadows apply to an embedded mesh, not to --target")
    if plot_dir is not None:
        require_matplotlib()
    if sensor_prefix is None:
        sensor_prefix = default_sensor_prefix() if target else ""
    windows = load_windows(windows_path)
    matched, skipped = match_files(root, windows)
    if not matched:
        raise ValueError(f"no CSV under {root} has an entry in {windows_path}")
    # Read and check every file and its windows before replaying any (no late surprises).
    prepared: list[tuple[str, Series, list[tuple[int, int]]]] = []
    for path, key in matched:
        series = read_series(path)
        if len(set(series.sensor_ids)) > 1:
            raise ValueError(
                f"{path}: one series per file expected (its sensor_id column has several)"
            )
        sensor = sensor_prefix + key
        if len(sensor) > MAX_SENSOR_ID_LENGTH or not sensor.isprintable():
            raise ValueError(f"{path}: sensor id {sensor!r} is too long or not printable")
        # A distinct sensor per file, so windows and incidents never mix across files.
        series.sensor_ids = [sensor] * len(series.values)
        limits = [(parse_timestamp(a), parse_timestamp(b)) for a, b in windows[key]]
        prepared.append((key, series, window_rows(series.timestamps.tolist(), limits, key)))
    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    results: list[FileResult] = []
    with tempfile.TemporaryDirectory(prefix="sentinel-evaluate-") as scratch:
        out_dir = verdicts_dir or Path(scratch)
        out_dir.mkdir(parents=True, exist_ok=True)
        embedded = {**(mesh_settings or {}), **shadow_mesh_settings(shadows)}
        async with _mesh(target, embedded) as mesh_target:
            for done, (key, series, _) in enumerate(prepared):
                if progress:
                    progress(done, len(prepared), key)
                out = out_dir / verdict_file_name(key)
                await replay(series, mesh_target, out, batch_size)
                result = score_verdicts(out, key, windows[key], mode, profiles)
                results.append(result)
                if plot_dir is not None:
                    plot_series(
                        out,
                        plot_dir / plot_file_name(key),
                        result.windows,
                        title=key,
                        probation=probationary_length(result.rows),
                        mark_anomalies=mode == "verdicts",
                    )
    if progress:
        progress(len(prepared), len(prepared), "")
    if target:
        settings: dict[str, str] = {}
    else:
        settings = detection_settings()
        settings |= {f"SENTINEL_{k.upper()}": str(v) for k, v in (mesh_settings or {}).items()}
        if shadows:
            settings["SENTINEL_SHADOWS"] = ",".join(shadows)
    return Evaluation(
        files=results,
        corpora=corpus_scores(results),
        shadow_corpora=shadow_corpus_scores(results),
        mode=mode,
        seconds=time.monotonic() - started,
        target=target,
        sensor_prefix=sensor_prefix,
        skipped=skipped,
        settings=settings,
    )


# --- reports ------------------------------------------------------------------------------------

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


def _normalised_text(corpus: CorpusScore) -> str:
    value = corpus.normalised
    return "n/a" if value is None else f"{value:.2f}"


def render(evaluation: Evaluation) -> str:
    """The per-file table (standard-profile raw scores) and the summary."""
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
    if evaluation.target:
        settings = f"those of the mesh at {evaluation.target}"
        sensors = f"; sensor ids {evaluation.sensor_prefix}<file>"
    else:
        settings = " ".join(f"{k}={v}" for k, v in evaluation.settings.items()) or "defaults"
        sensors = (
            f"; sensor ids {evaluation.sensor_prefix}<file>" if evaluation.sensor_prefix else ""
        )
    scores = "  ".join(
        f"{name} {_normalised_text(score)}" for name, score in evaluation.corpora.items()
    )
    lines += [
        "",
        f"detections: {evaluation.mode}; settings: {settings}{sensors}",
        f"standard profile: raw {corpus.raw:.4f}, null {corpus.null:.4f}, "
        f"perfect {corpus.perfect:.4f}",
        f"NAB score (normalised, null = 0, perfect = 100): {scores}"
        + (" (no labelled windows)" if corpus.normalised is None else ""),
        f"{len(corpus.files)} files in {evaluation.seconds:.1f} s",
    ]
    if evaluation.shadow_corpora:
        lines += ["", *render_shadows(evaluation)]
    if evaluation.missing_rows:
        lines.append(
            f"warning: {evaluation.missing_rows} rows had no verdict (counted as not anomalous)"
        )
    if evaluation.degraded_rows:
        lines.append(
            f"warning: {evaluation.degraded_rows} verdicts were degraded (a specialist did not "
            "answer): the score reflects an outage, not the detector"
        )
    if evaluation.skipped:
        lines.append(f"not scored (no entry in the windows file): {', '.join(evaluation.skipped)}")
    return "\n".join(lines)


def render_shadows(evaluation: Evaluation) -> list[str]:
    """NAB scores of the verdict and of the verdict with each shadow in its specialist's place,
    side by side, and each specialist's agreement with its shadow."""
    profiles = list(evaluation.corpora)
    table = [
        ["NAB score (normalised), one replay", *profiles],
        ["verdict", *(_normalised_text(evaluation.corpora[p]) for p in profiles)],
    ]
    for shadow, corpora in evaluation.shadow_corpora.items():
        table.append(
            [f"verdict with {shadow}'s shadow", *(_normalised_text(corpora[p]) for p in profiles)]
        )
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = [
        "  ".join(
            [
                row[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
            ]
        )
        for row in table
    ]
    for shadow in evaluation.shadow_corpora:
        agreement = evaluation.agreement(shadow)
        lines.append(
            f"{shadow} and its shadow both voted on {agreement.compared} rows: both flagged "
            f"{agreement.both}, only {shadow} {agreement.only_primary}, only the shadow "
            f"{agreement.only_shadow}"
        )
        unanswered = evaluation.shadow_unanswered(shadow)
        if unanswered:
            lines.append(
                f"warning: {shadow}'s shadow did not answer for {unanswered} rows (counted as "
                "not detected with it in place)"
            )
    return lines


def write_report(path: Path, evaluation: Evaluation) -> None:
    """The per-file table as CSV (standard-profile raw scores) plus one `normalised_<profile>`
    column per profile, filled on the TOTAL row (and, with shadows, one
    `normalised_<profile>_with_<specialist>_shadow` column per shadow and profile)."""
    corpus = evaluation.corpus
    names = list(evaluation.corpora)
    shadowed = [
        (shadow, name) for shadow in evaluation.shadow_corpora for name in evaluation.corpora
    ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                *REPORT_COLUMNS,
                *(f"normalised_{name}" for name in names),
                *(f"normalised_{name}_with_{shadow}_shadow" for shadow, name in shadowed),
            ]
        )
        for row in report_rows(corpus):
            totals = [""] * (len(names) + len(shadowed))
            if row[0] == "TOTAL":
                values = [evaluation.corpora[name].normalised for name in names]
                values += [evaluation.shadow_corpora[s][name].normalised for s, name in shadowed]
                totals = ["" if v is None else f"{v:.4f}" for v in values]
            writer.writerow([*row, *totals])


# --- plots --------------------------------------------------------------------------------------


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'sentinel-mesh[plot]'") from error


def plot_series(
    verdict_csv: Path,
    out: Path,
    windows: Sequence[tuple[int, int]] = (),
    title: str | None = None,
    probation: int | None = None,
    mark_anomalies: bool = False,
) -> Path:
    """One PNG of a replayed series: values with the labelled windows (row ranges) shaded and
    alert openings marked; underneath, each specialist's likelihood on a log scale (from the
    `<specialist>_likelihood` columns; a specialist whose column is all empty or all 1 — no
    calibrated channel — is left out).
    `mark_anomalies` also marks every anomalous verdict. Uses matplotlib's Agg canvas."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = read_verdicts(verdict_csv)
    values = np.asarray(table.values, dtype=float)
    try:
        stamps = np.array([parse_timestamp(t) for t in table.timestamps], dtype=np.int64)
    except ValueError:
        stamps = None
    if stamps is not None and len(stamps) > 1 and bool(np.all(np.diff(stamps) >= 0)):
        x = stamps.astype("datetime64[ns]")
        x_label = "time (UTC)"
    else:
        x = np.arange(table.rows)
        x_label = "row"

    figure = Figure(figsize=(14, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    top.plot(x, values, color="tab:blue", linewidth=0.8, label="value")
    if probation and table.rows:
        top.axvspan(x[0], x[min(probation, table.rows) - 1], color="0.85", alpha=0.5,
                    label="probationary")  # fmt: skip
    for n, (left, right) in enumerate(windows):
        top.axvspan(x[left], x[right], color="tab:orange", alpha=0.25,
                    label="labelled window" if n == 0 else None)  # fmt: skip
    if mark_anomalies:
        flagged = np.flatnonzero(np.asarray(table.anomaly, dtype=bool))
        if len(flagged):
            top.scatter(x[flagged], values[flagged], s=6, color="tab:purple", zorder=3,
                        label="anomalous verdict")  # fmt: skip
    if table.alerts is not None:
        opens = table.alert_rows("open")
        for i in opens:
            top.axvline(x[i], color="tab:red", linewidth=0.7, alpha=0.6)
        if opens:
            top.scatter(x[opens], values[opens], marker="v", s=36, color="tab:red", zorder=4,
                        label="alert opened")  # fmt: skip
        resolved = table.alert_rows("resolved")
        if resolved:
            top.scatter(x[resolved], values[resolved], marker="^", s=24, color="tab:green",
                        zorder=4, label="alert resolved")  # fmt: skip
    top.set_title(title or verdict_csv.name)
    top.set_ylabel("value")
    top.legend(loc="upper left", fontsize="small")

    drawn = 0
    for name, series in sorted(table.likelihoods.items()):
        likelihood = np.asarray(series, dtype=float)
        likelihood[~(likelihood > 0)] = np.nan  # empty cells, and 0 has no logarithm
        # All empty, or all 1: an engine without calibrated channels (e.g. threshold).
        if np.all(np.isnan(likelihood) | (likelihood >= 1.0)):
            continue
        bottom.plot(x, likelihood, linewidth=0.8, label=name)
        drawn += 1
    if drawn:
        bottom.set_yscale("log")
        bottom.legend(loc="lower left", fontsize="small")
    else:
        bottom.text(0.5, 0.5, "no likelihoods in this replay", ha="center", va="center",
                    transform=bottom.transAxes)  # fmt: skip
    bottom.set_ylabel("likelihood")
    bottom.set_xlabel(x_label)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out


def run(
    root: Path,
    windows_path: Path,
    mode: str = "alerts",
    out: Path | None = None,
    batch_size: int = 500,
    verdicts_dir: Path | None = None,
    *,
    target: str | None = None,
    sensor_prefix: str | None = None,
    plot_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    shadows: Sequence[str] = (),
) -> Evaluation:
    """`evaluate` in a fresh event loop; also writes the CSV report to `out` when given."""
    evaluation = asyncio.run(
        evaluate(
            root,
            windows_path,
            mode,
            batch_size,
            verdicts_dir,
            progress,
            target=target,
            sensor_prefix=sensor_prefix,
            plot_dir=plot_dir,
            shadows=shadows,
        )
    )
    if out is not None:
        write_report(out, evaluation)
    return evaluation
