"""The `sentinel` command line: serve a role, run the demo, replay a CSV.

Errors a person can fix (a bad CSV cell, a setting, a refused request) print one line naming
the file, row and column or the setting, and exit 2; anything else prints one line and exits
1. `--debug` (anywhere on the command line) shows the traceback instead.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Sentinel Mesh: streaming anomaly detection as a gRPC service mesh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sentinel-mesh {version('sentinel-mesh')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """Sentinel Mesh: streaming anomaly detection as a gRPC service mesh."""


class Role(enum.StrEnum):
    orchestrator = "orchestrator"
    threshold = "threshold"
    statistical = "statistical"
    model = "model"
    all = "all"


def _overrides(**values) -> dict:
    """CLI flags that were given; unset flags leave env/defaults (SENTINEL_*) in charge."""
    return {k: v for k, v in values.items() if v is not None}


HostOpt = Annotated[
    str | None, typer.Option(help="Bind address [env SENTINEL_HOST; default 127.0.0.1].")
]
PortOpt = Annotated[
    int | None,
    typer.Option(help="gRPC port; 0 picks a free one [env SENTINEL_PORT; default 50051]."),
]
MetricsOpt = Annotated[
    int | None,
    typer.Option(help="Prometheus /metrics port [env SENTINEL_METRICS_PORT; default off]."),
]


@app.command()
def serve(
    role: Annotated[
        Role,
        typer.Argument(help="What to run: one role, or `all` for the whole mesh on this machine."),
    ],
    host: HostOpt = None,
    port: PortOpt = None,
    metrics_port: MetricsOpt = None,
    specialists: Annotated[
        str | None,
        typer.Option(help="orchestrator: name=target,... [env SENTINEL_SPECIALISTS]."),
    ] = None,
    shadows: Annotated[
        str | None,
        typer.Option(
            help="orchestrator: shadow engines name=target,... (never vote) [env SENTINEL_SHADOWS]."
        ),
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="orchestrator: combine policy any|majority|weighted.")
    ] = None,
    rules: Annotated[Path | None, typer.Option(help="threshold: TOML file of limit rules.")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="model: bundled model name (iforest-v1, iforest-v2) or .onnx path."),
    ] = None,
    version_tag: Annotated[
        str | None,
        typer.Option(
            help="specialists: appended to the reported engine version (VERSION+TAG), to tell "
            "two deployments of one engine apart [env SENTINEL_VERSION_TAG]."
        ),
    ] = None,
    ready_file: Annotated[
        str | None,
        typer.Option(help="Write the bound port here once serving (for supervisors)."),
    ] = None,
    console_spans: Annotated[bool, typer.Option(help="Print trace spans to the console.")] = False,
    pass_through: Annotated[
        bool,
        typer.Option(
            hidden=True,
            help="Internal (`bench --baseline`): serve ROLE's transport without its work.",
        ),
    ] = False,
) -> None:
    """Run one role of the mesh (or `all`) until SIGINT/SIGTERM, then drain and stop."""
    from sentinel.lifeline import die_with_parent

    die_with_parent()  # started by another sentinel process: stop when it does
    common = _overrides(host=host, port=port, metrics_port=metrics_port)
    if pass_through:
        _serve_pass_through(role, common, specialists, ready_file)
        return
    if role in (Role.orchestrator, Role.all):
        from sentinel.orchestrator.settings import OrchestratorSettings

        orchestrator_settings = OrchestratorSettings(
            **common,
            **_overrides(specialists=specialists, shadows=shadows, combine_policy=policy),
        )
        if role is Role.orchestrator:
            from sentinel.orchestrator.main import main as orchestrator_main

            orchestrator_main(orchestrator_settings, ready_file, console_spans)
        else:
            from sentinel.app.serve_all import main as serve_all_main

            serve_all_main(orchestrator_settings, ready_file, console_spans)
        return
    from sentinel.specialists.main import main as specialist_main
    from sentinel.specialists.settings import SpecialistSettings

    settings = SpecialistSettings(
        engine=role.value,
        **common,
        **_overrides(
            threshold_rules_file=str(rules) if rules else None,
            model_path=model,
            version_tag=version_tag,
        ),
    )
    specialist_main(settings, ready_file, console_spans)


def _serve_pass_through(
    role: Role, common: dict, specialists: str | None, ready_file: str | None
) -> None:
    if role is Role.all:
        raise typer.BadParameter("--pass-through serves one role, not `all`")
    if role is Role.orchestrator:
        from sentinel.orchestrator.passthrough import main as pass_through_orchestrator
        from sentinel.orchestrator.settings import OrchestratorSettings

        settings = OrchestratorSettings(**common, **_overrides(specialists=specialists))
        pass_through_orchestrator(settings, ready_file)
        return
    from sentinel.specialists.passthrough import main as pass_through_specialist
    from sentinel.specialists.settings import SpecialistSettings

    pass_through_specialist(SpecialistSettings(engine=role.value, **common), ready_file)


@app.command()
def demo(
    seconds: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds (default: run until Ctrl-C)."),
    ] = None,
    sensors: Annotated[
        int, typer.Option(min=1, max=10_000, help="Number of simulated sensors.")
    ] = 8,
    rate: Annotated[
        float, typer.Option(min=0.1, max=1000, help="Readings per second per sensor.")
    ] = 20.0,
    port: Annotated[int, typer.Option(help="Orchestrator port (0 = any free port).")] = 0,
    console_spans: Annotated[
        bool,
        typer.Option(
            help="Write the orchestrator's OpenTelemetry spans, one JSON object per line, to "
            "--spans-file (not between the alert lines)."
        ),
    ] = False,
    spans_file: Annotated[
        str, typer.Option(help="Where --console-spans writes ('-' for stderr).")
    ] = "sentinel-demo-spans.jsonl",
) -> None:
    """The whole mesh plus simulated sensors (spikes, drifts, level shifts): live alerts, then a
    summary."""
    import logging

    from sentinel.app.demo import run_demo
    from sentinel.telemetry import configure_logging

    configure_logging("WARNING", "text")
    logging.getLogger("sentinel.orchestrator.specialist_pool").setLevel(logging.ERROR)
    asyncio.run(
        run_demo(
            seconds, sensors, rate, port=port, console_spans=console_spans, spans_file=spans_file
        )
    )


ShadowOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="NAME=TARGET: also score NAME's requests on the specialist at TARGET (e.g. "
        "model=127.0.0.1:50071, started with `sentinel serve model --model NEW`), which never "
        "votes; repeat for more shadows."
    ),
]
SHADOW_WITH_TARGET = (
    "--shadow configures the embedded mesh; a running orchestrator shadows what its own "
    "SENTINEL_SHADOWS names (its verdicts carry them with SENTINEL_SHADOW_VERDICTS=true)"
)


@app.command()
def replay(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV with columns timestamp,value[,sensor_id] (NAB format).",
        ),
    ],
    target: Annotated[
        str | None, typer.Option(help="Orchestrator HOST:PORT; default: an embedded mesh.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Verdict CSV to write (default: FILE.verdicts.csv).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Readings per batch.")] = 500,
    partition: Annotated[
        str | None,
        typer.Option(
            help="Ownership key (x-sentinel-partition) the mesh routes by; default: the "
            "file's sensor id (the smallest one if it has several)."
        ),
    ] = None,
    shadow: ShadowOpt = None,
) -> None:
    """Stream a CSV through the mesh and write one verdict row per input row, in file order
    (with an `alert` column: open/resolved on the row whose verdict emitted the alert event,
    and each specialist's score and likelihood; with --shadow, each shadow's score, flag,
    verdict and alert columns)."""
    from rich.console import Console
    from rich.progress import Progress

    from sentinel.app.replay import read_series, shadow_mesh_settings
    from sentinel.app.replay import replay as run_replay
    from sentinel.telemetry import configure_logging

    if shadow and target:
        raise typer.BadParameter(SHADOW_WITH_TARGET, param_hint="--shadow")
    configure_logging("WARNING", "text")
    console = Console(stderr=True)
    series = read_series(file)
    out = out or file.with_suffix(".verdicts.csv")

    async def go() -> dict[str, int]:
        with Progress(console=console) as progress:
            task = progress.add_task(f"replaying {file.name}", total=len(series.values))

            def advance(n: int) -> None:
                progress.update(task, advance=n)

            if target:
                return await run_replay(
                    series, target, out, batch_size, advance, partition=partition
                )
            from sentinel.app.local_mesh import embedded_mesh

            async with embedded_mesh(**shadow_mesh_settings(shadow or [])) as local_target:
                return await run_replay(
                    series, local_target, out, batch_size, advance, partition=partition
                )

    counts = asyncio.run(go())
    console.print(
        f"wrote {counts['rows']} verdict rows for {len(series.values)} input rows to {out} "
        f"({counts['anomalies']} anomalous, {counts['missing']} missing; alerts: "
        f"{counts['alerts_opened']} opened, {counts['alerts_resolved']} resolved)"
    )


@app.command()
def bench(
    seconds: Annotated[
        float,
        typer.Option(min=1, help="Measured duration per mesh (after a warm-up of each)."),
    ] = 10.0,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Readings per batch.")] = 1000,
    sensors: Annotated[
        int, typer.Option(min=1, max=100_000, help="Distinct sensors the readings cycle through.")
    ] = 100,
    producers: Annotated[int, typer.Option(min=1, max=64, help="Concurrent streams.")] = 2,
    window: Annotated[
        int,
        typer.Option(
            min=1,
            help="Closed loop: unacked batches per stream (64: TelemetryClient's max_unacked).",
        ),
    ] = 64,
    rate: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Open loop: offer this many readings/s on a fixed schedule (latency from the "
            "scheduled send time) instead of as many as the mesh takes.",
        ),
    ] = None,
    baseline: Annotated[
        bool,
        typer.Option(
            help="Also measure a pass-through mesh (same processes and transport, no "
            "detection), alternating with the real one, and print real / pass-through."
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object with every figure.")
    ] = False,
    warmup: Annotated[
        float, typer.Option(min=0, help="Closed-loop warm-up of each mesh, seconds.")
    ] = 2.0,
    target: Annotated[
        str | None, typer.Option(help="Benchmark this orchestrator instead of a local mesh.")
    ] = None,
) -> None:
    """Measure the mesh: readings/s through orchestrator + all specialists, ack latency
    (p50/p99/p99.9), CPU per 1000 readings and peak RSS of every process."""
    import json

    from sentinel.app.bench import BenchConfig, run_bench

    if baseline and target:
        raise typer.BadParameter("--baseline starts local meshes; drop --target")
    config = BenchConfig(
        seconds=seconds,
        batch_size=batch_size,
        sensors=sensors,
        producers=producers,
        window=window,
        rate=rate,
        baseline=baseline,
        target=target,
        warmup_seconds=warmup,
    )
    report = asyncio.run(run_bench(config))
    if json_output:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.render())


@app.command()
def soak(
    seconds: Annotated[
        float, typer.Option(min=5, help="How long the producers stream while faults are injected.")
    ] = 60.0,
    sensors: Annotated[
        int, typer.Option(min=1, max=10_000, help="Simulated sensors, split over the producers.")
    ] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the fault schedule and the readings.")] = 1,
    rate: Annotated[
        float, typer.Option(min=1, max=1000, help="Readings per second per sensor.")
    ] = 50.0,
    producers: Annotated[int, typer.Option(min=1, max=32, help="Concurrent TelemetryClients.")] = 2,
) -> None:
    """The mesh as separate processes under random faults (specialist SIGKILL/restart and hangs,
    orchestrator SIGTERM/restart); prints sent/acked/scored/duplicated/degraded counts and peak
    memory. Exits 1 if any reading was lost or scored twice."""
    import os

    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from sentinel.app.soak import run_soak
    from sentinel.telemetry import configure_logging

    configure_logging("WARNING", "text")
    report = asyncio.run(
        run_soak(
            seconds,
            sensors=sensors,
            seed=seed,
            producers=min(producers, sensors),
            rate=rate,
            progress=lambda line: print(line, flush=True),
        )
    )
    print(report.render(), flush=True)
    raise typer.Exit(0 if report.ok else 1)


class Detections(enum.StrEnum):
    alerts = "alerts"
    verdicts = "verdicts"


@app.command()
def sizing(
    sensors: Annotated[int, typer.Option(min=1, max=10_000_000, help="Sensors to hold.")] = 100_000,
    checkpoint: Annotated[
        bool, typer.Option(help="Also time a checkpoint of that history and report its size.")
    ] = True,
) -> None:
    """Memory of the orchestrator's per-sensor history with the default engines: accounted
    bytes per sensor and the RSS growth of holding SENSORS sensors (for sizing a pod), and
    what checkpointing it costs."""
    from sentinel.app.sizing import measure

    typer.echo(measure(sensors, checkpoint=checkpoint).render())


@app.command()
def tune(
    directory: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="Directory of labelled CSVs."),
    ],
    windows: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="NAB windows JSON.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="Grid entry NAME=v1|v2|... (NAME a SENTINEL_* variable, or "
            "threshold:SPECIALIST.CHANNEL); repeat for more. Default: level and daily "
            "likelihood thresholds x adaptive margin (27 runs)."
        ),
    ] = None,
    ablation: Annotated[
        bool, typer.Option(help="Instead of a grid: the defaults with one part removed at a time.")
    ] = False,
    jobs: Annotated[int, typer.Option(min=1, help="Evaluations run at once.")] = 2,
) -> None:
    """Choose detection settings on labelled data: every configuration is a full `sentinel
    evaluate` run; prints the grid, the in-sample best and the leave-one-category-out score
    (settings chosen without each category, scored on it)."""
    from rich.console import Console
    from rich.progress import Progress

    from sentinel.app import tune as tuning

    configs = (
        [(name, env) for name, env in tuning.ABLATIONS.items()]
        if ablation
        else tuning.grid_configs(tuning.parse_grid(param) if param else tuning.DEFAULT_GRID)
    )
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating configurations", total=len(configs))
        results = tuning.run_all(
            directory, windows, configs, jobs, lambda r: progress.advance(task)
        )
    for line in tuning.render_results(results):
        typer.echo(line)
    if not ablation:
        for line in tuning.render_selection(tuning.leave_one_category_out(results)):
            typer.echo(line)
    if any(r.error for r in results):
        raise typer.Exit(1)


@app.command()
def evaluate(
    directory: Annotated[
        Path,
        typer.Argument(
            exists=True,
            file_okay=False,
            help="Directory of labelled CSVs (e.g. the NAB data/ tree).",
        ),
    ],
    windows: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            help='NAB windows JSON: {"dir/file.csv": [[start, end], ...]}.',
        ),
    ],
    detections: Annotated[
        Detections,
        typer.Option(
            help="alerts: the rows where the orchestrator opened an alert; "
            "verdicts: every anomalous verdict."
        ),
    ] = Detections.alerts,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Also write the per-file table and each profile's normalised total as CSV."
        ),
    ] = None,
    verdicts_dir: Annotated[
        Path | None, typer.Option(help="Keep each file's verdict CSV here (default: discarded).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Readings per batch.")] = 500,
    target: Annotated[
        str | None,
        typer.Option(
            help="Evaluate through this running orchestrator (HOST:PORT, e.g. of "
            "`sentinel serve all`) instead of an embedded mesh."
        ),
    ] = None,
    sensor_prefix: Annotated[
        str | None,
        typer.Option(
            help="Sensor id of each file = prefix + its windows key [default: a fresh unique "
            "prefix with --target, none with the embedded mesh]."
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Write one PNG per file here: values, labelled windows, alert openings, "
            "specialist likelihoods (needs the `plot` extra: matplotlib).",
        ),
    ] = None,
    shadow: ShadowOpt = None,
) -> None:
    """Replay every CSV under DIRECTORY through one mesh (embedded, or --target) and print its
    NAB score: per file (standard profile) and normalised under the standard,
    reward_low_FP_rate and reward_low_FN_rate profiles (never fires = 0, perfect = 100).
    With --shadow, the same replay also scores the verdict with each shadow in its specialist's
    place, printed side by side. Embedded engine settings: SENTINEL_* env."""
    from rich.console import Console
    from rich.progress import Progress

    from sentinel.app.evaluate import render
    from sentinel.app.evaluate import run as run_evaluate
    from sentinel.telemetry import configure_logging

    configure_logging("WARNING", "text")
    console = Console(stderr=True)
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("evaluating", total=None)

            def advance(done: int, total: int, current: str) -> None:
                description = f"replaying {current}" if current else "evaluated"
                progress.update(task, completed=done, total=total, description=description)

            evaluation = run_evaluate(
                directory,
                windows,
                detections.value,
                out,
                batch_size,
                verdicts_dir,
                target=target,
                sensor_prefix=sensor_prefix,
                plot_dir=plot,
                progress=advance,
                shadows=shadow or [],
            )
    except (ValueError, ImportError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    print(render(evaluation), flush=True)


def describe_error(error: BaseException) -> tuple[str, int]:
    """One line for a person, and the exit code: 2 for input and settings they can fix."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        problems = []
        for item in error.errors():
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["loc"]:
                setting = ".".join(str(part) for part in item["loc"])
                env = f"SENTINEL_{setting.upper()}"
                problems.append(
                    f"setting {setting} ({env} or --{setting.replace('_', '-')}): {message}"
                )
            else:
                problems.append(f"settings: {message}")
        return "; ".join(problems), 2
    import grpc

    if isinstance(error, grpc.aio.AioRpcError):
        code = error.code()
        user = code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
        return f"the orchestrator answered {code.name}: {error.details()}", 2 if user else 1
    if isinstance(error, (ValueError, OSError)):
        return str(error), 2
    return f"{type(error).__name__}: {error} (run with --debug for the traceback)", 1


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="sentinel", standalone_mode=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:
        if debug:
            raise
        line, code = describe_error(error)
        print(f"sentinel: error: {line}", file=sys.stderr, flush=True)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
