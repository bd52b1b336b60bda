"""``tavus-callbacks config``: the configuration reference, written from the declarations, and
a check of the environment, for a deploy to run before it starts anything."""

from __future__ import annotations

from pathlib import Path

import click

from schemas import reference
from schemas.settings import Settings, SettingsError
from workers import destinations, extensions

REFERENCE = Path("docs/configuration.md")


def reference_text() -> str:
    """The reference as the declarations say it, destination types included."""
    return reference.markdown(destinations.forward_types())


@click.group("config")
def config() -> None:
    """The settings: what each environment variable means."""


@config.command("docs")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=REFERENCE,
    show_default=True,
    help="Where to write the reference; - prints it.",
)
@click.option("--check", is_flag=True, help="Write nothing; fail if OUTPUT is out of date.")
def docs(output: Path, check: bool) -> None:
    """Write the configuration reference from the settings' declarations."""
    text = reference_text()
    if str(output) == "-":
        click.echo(text, nl=False)
    elif check:
        if not output.is_file() or output.read_text(encoding="utf-8") != text:
            raise click.ClickException(f"{output} is out of date: run tavus-callbacks config docs")
        click.echo(f"{output} is up to date")
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")


@config.command("check")
def check() -> None:
    """Read the environment as the processes do, forward destinations' own settings included;
    say what is wrong, naming the variable (never its value)."""
    try:
        settings = Settings.from_env()
        destinations.check(settings)
        extensions.load(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    names = ", ".join(destination.name for destination in settings.forward_destinations)
    click.echo(f"configuration valid; forward destinations: {names or 'none'}")


def register(main: click.Group) -> None:
    main.add_command(config)
