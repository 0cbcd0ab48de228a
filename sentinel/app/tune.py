"""`sentinel tune`: choose detection settings honestly, and show what each part is worth.

Every configuration is one full `sentinel evaluate` run through a real embedded mesh (a child
process with its own SENTINEL_* environment, so the specialists it starts see it too); nothing
here re-implements detection or alerting. From the per-file standard-profile scores of a grid:

- **in-sample**: the configuration with the best normalised score over all files;
- **leave-one-category-out**: for each category (first path component of a file's windows key,
  e.g. `realTweets`), the configuration is chosen on the *other* categories only and then
  scored on the held-out one; the held-out raw scores are summed and normalised. This is the
  figure to expect on series the settings were not chosen on.

`--ablation` instead runs the defaults with one part removed at a time.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sentinel.app.evaluate import PROFILES, category

# Grid keys are SENTINEL_* variables, or `threshold:<specialist>.<channel>` entries that are
# combined into SENTINEL_LIKELIHOOD_THRESHOLDS.
DEFAULT_GRID: dict[str, list[str]] = {
    "threshold:statistical.level": ["1e-5", "1e-6", "1e-7"],
    "threshold:statistical.daily": ["1e-7", "1e-8", "1e-10"],
    "SENTINEL_ADAPTIVE_MARGIN": ["0.03", "0.05", "0.08"],
}

OFF = "0"  # a likelihood threshold no reading goes below: the channel never flags

ABLATIONS: dict[str, dict[str, str]] = {
    "defaults": {},
    "without threshold (adaptive limits)": {"SENTINEL_ADAPTIVE_LIMITS": "false"},
    "without statistical.level": {"SENTINEL_LIKELIHOOD_THRESHOLDS": f"statistical.level={OFF}"},
    "without statistical.daily": {"SENTINEL_STATISTICAL_DAILY": "false"},
    "with model.forest at 1e-8": {"SENTINEL_LIKELIHOOD_THRESHOLDS": "model.forest=1e-8"},
    "without the likelihood stage (single-reading z)": {"SENTINEL_CALIBRATION": "raw"},
    "majority instead of any": {"SENTINEL_COMBINE_POLICY": "majority"},
    "resolve after 60 readings": {"SENTINEL_RESOLVE_AFTER": "60"},
}


@dataclass(frozen=True, slots=True)
class FileRow:
    raw: float
    windows: int  # labelled windows (perfect = windows)
    scored_windows: int  # windows after probation (null = -scored_windows)


@dataclass
class ConfigResult:
    name: str
    env: dict[str, str]
    files: dict[str, FileRow] = field(default_factory=dict)
    normalised: dict[str, float] = field(default_factory=dict)  # profile -> total
    error: str = ""

    def score(self, keys: Sequence[str] | None = None) -> float:
        return normalise([self.files[k] for k in (self.files if keys is None else keys)])


def normalise(rows: Sequence[FileRow]) -> float:
    """NAB standard-profile normalisation of a subset of files (never fires 0, perfect 100)."""
    raw = sum(r.raw for r in rows)
    null = -sum(r.scored_windows for r in rows)
    perfect = sum(r.windows for r in rows)
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else float("nan")


def grid_configs(grid: Mapping[str, Sequence[str]]) -> list[tuple[str, dict[str, str]]]:
    keys = list(grid)
    configs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        env: dict[str, str] = {}
        thresholds = []
        for key, value in zip(keys, values, strict=True):
            if key.startswith("threshold:"):
                thresholds.append(f"{key.removeprefix('threshold:')}={value}")
            else:
                env[key] = value
        if thresholds:
            env["SENTINEL_LIKELIHOOD_THRESHOLDS"] = ",".join(thresholds)
        name = " ".join(
            f"{k.removeprefix('SENTINEL_').lower()}={v}" for k, v in zip(keys, values, strict=True)
        )
        configs.append((name, env))
    return configs


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """`NAME=v1|v2|...` per entry (NAME a SENTINEL_* variable or threshold:spec.channel)."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not values:
            raise ValueError(f"grid entry {spec!r}: expected NAME=v1|v2|...")
        grid[name.strip()] = [v.strip() for v in values.split("|") if v.strip()]
    return grid


def read_report(path: Path) -> tuple[dict[str, FileRow], dict[str, float]]:
    files: dict[str, FileRow] = {}
    totals: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["file"] == "TOTAL":
                for profile in PROFILES:
                    value = row.get(f"normalised_{profile}", "")
                    if value:
                        totals[profile] = float(value)
                continue
            files[row["file"]] = FileRow(
                raw=float(row["raw_score"]),
                windows=int(row["windows"]),
                scored_windows=int(row["tp_windows"]) + int(row["fn"]),
            )
    return files, totals


def run_config(
    root: Path, windows: Path, name: str, env: Mapping[str, str], workdir: Path, index: int
) -> ConfigResult:
    out = workdir / f"config-{index}.csv"
    command = [
        sys.executable, "-P", "-c", "from sentinel.app.cli import main; main()",
        "evaluate", str(root), "--windows", str(windows), "--out", str(out),
    ]  # fmt: skip
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    child_env |= env
    done = subprocess.run(command, env=child_env, capture_output=True, text=True, check=False)
    result = ConfigResult(name, dict(env))
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        result.error = lines[-1] if lines else f"exit code {done.returncode}"
        return result
    result.files, result.normalised = read_report(out)
    return result


def run_all(
    root: Path,
    windows: Path,
    configs: Sequence[tuple[str, dict[str, str]]],
    jobs: int,
    progress: Callable[[ConfigResult], None] | None = None,
) -> list[ConfigResult]:
    with tempfile.TemporaryDirectory(prefix="sentinel-tune-") as scratch:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [
                pool.submit(run_config, root, windows, name, env, Path(scratch), i)
                for i, (name, env) in enumerate(configs)
            ]
            results = []
            for future in futures:
                result = future.result()
                if progress:
                    progress(result)
                results.append(result)
    return results


@dataclass(frozen=True, slots=True)
class HeldOut:
    category: str
    chosen: str  # configuration chosen without this category
    score: float  # that configuration's normalised score on the held-out category


@dataclass(frozen=True, slots=True)
class Selection:
    best: ConfigResult
    in_sample: float
    held_out: list[HeldOut]
    loco: float


def leave_one_category_out(results: Sequence[ConfigResult]) -> Selection:
    usable = [r for r in results if not r.error and r.files]
    if not usable:
        raise ValueError("no configuration ran successfully")
    keys = sorted(usable[0].files)
    best = max(usable, key=lambda r: r.score())
    held: list[HeldOut] = []
    held_rows: list[FileRow] = []
    for name in sorted({category(k) for k in keys}):
        inside = [k for k in keys if category(k) == name]
        outside = [k for k in keys if category(k) != name]
        chosen = max(usable, key=lambda r: r.score(outside))
        held.append(HeldOut(name, chosen.name, chosen.score(inside)))
        held_rows += [chosen.files[k] for k in inside]
    return Selection(best, best.score(), held, normalise(held_rows))


def render_results(results: Sequence[ConfigResult]) -> list[str]:
    width = max(len(r.name) for r in results)
    lines = [f"{'configuration'.ljust(width)}  " + "  ".join(f"{p:>18}" for p in PROFILES)]
    for r in results:
        if r.error:
            lines.append(f"{r.name.ljust(width)}  error: {r.error}")
            continue
        lines.append(
            f"{r.name.ljust(width)}  "
            + "  ".join(f"{r.normalised.get(p, float('nan')):18.2f}" for p in PROFILES)
        )
    return lines


def render_selection(selection: Selection) -> list[str]:
    lines = [
        "",
        f"in-sample best: {selection.best.name} -> {selection.in_sample:.2f}",
        "leave-one-category-out (settings chosen without the category, scored on it):",
    ]
    width = max(len(h.category) for h in selection.held_out)
    for h in selection.held_out:
        score = "    n/a" if math.isnan(h.score) else f"{h.score:7.2f}"  # no labelled windows
        lines.append(f"  {h.category.ljust(width)}  {score}  chosen: {h.chosen}")
    lines.append(
        f"leave-one-category-out score (held-out raw scores, normalised): {selection.loco:.2f}"
    )
    return lines
