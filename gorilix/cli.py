"""The ``gorilix`` command: parsing and presentation only; the work is in the library."""

from __future__ import annotations

import json
import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "GORILIX"})
@click.version_option(package_name="gorilix")
def main() -> None:
    """Gorilix: an actor host for Python."""


@main.command()
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes (default: one per core).")
def demo(workers: int | None) -> None:
    """Run the demo on localhost: CPU-bound actors across cores, then a failover drill."""
    from gorilix.demo import run_demo

    sys.exit(run_demo(workers=workers, echo=click.echo))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--quick", is_flag=True, help="Fewer rounds (a smoke run, not a measurement).")
def bench(as_json: bool, quick: bool) -> None:
    """Measure latency, throughput, speedup, spawn rate and failover on this machine."""
    from gorilix.bench import run_bench

    report = run_bench(quick=quick, progress=not as_json)
    if as_json:
        click.echo(json.dumps(report, indent=2))
