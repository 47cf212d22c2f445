"""`spacec runs` and `spacec report`: the run directories under a folder, and several side by side.

Both read run directories' files only (spacec.runtime.tools.runs), so they work without torch.
"""

from __future__ import annotations

from pathlib import Path

import click

from spacec.cli.app import main, user_errors


@main.command("runs")
@click.argument("folder", required=False, default="runs",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
@user_errors
def runs_command(folder: Path, as_json: bool) -> None:
    """The run directories under FOLDER (default: runs): kind, space, method, epochs, best
    validation figure, status (finished, interrupted, failed, running) and genotype."""
    import json

    from spacec.runtime.tools.runs import describe_runs, find_runs, summarise, summary_record

    summaries = [summarise(path) for path in find_runs(folder)]
    if as_json:
        for summary in summaries:
            click.echo(json.dumps(summary_record(summary)))
        return
    if not summaries:
        click.echo(f"no run directories under {folder}")
        return
    for line in describe_runs(summaries, relative_to=folder):
        click.echo(line)


@main.command("report")
@click.argument("runs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default="report.html", show_default=True, help="The HTML file to write.")
@user_errors
def report_command(runs: tuple[Path, ...], output: Path) -> None:
    """Several runs side by side in one HTML file: their figures, the settings in which they
    differ, and their pictures (derived cells; α for searches)."""
    from spacec.runtime.tools.runs import write_report

    click.echo(str(write_report(list(runs), output)))
