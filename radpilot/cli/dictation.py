"""``radpilot dictate``: transcribe recorded dictation files offline, in one process (the model loads once)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from radpilot.cli.progress import progress_bar

console = Console(stderr=True)


def dictate(
    files: Annotated[list[Path], typer.Argument(help="Audio files: WAV, FLAC, MP3, Ogg or WebM")],
    language: Annotated[str, typer.Option("--language", help="Spoken language: en or ko")] = "en",
    exam: Annotated[str | None, typer.Option("--exam", help="Exam type whose vocabulary steers recognition, e.g. chest_ct")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON list of {file, text, words, commands}")] = False,
) -> None:
    """Transcribe dictation into report text (numbers, units, punctuation formatted; voice commands listed)."""
    from radpilot.cli import load_settings
    from radpilot.dictation import AudioError, Dictation, LexiconError, ModelError
    from radpilot.logging_setup import configure_logging

    settings = load_settings()
    configure_logging("WARNING")
    dictation = Dictation(settings)
    try:
        dictation.check_request(language, exam)
    except (ValueError, ModelError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        console.print(f"[red]no such file:[/red] {escape(', '.join(missing))}")
        raise typer.Exit(2)
    results: list[dict] = []
    failed = 0
    show_progress = len(files) > 1 and console.is_terminal
    with progress_bar(console) if show_progress else _NoProgress() as progress:
        task = progress.add_task("dictating", total=len(files))
        for path in files:
            try:
                result = dictation.transcribe_file(path, language=language, exam=exam)
            except (AudioError, LexiconError) as exc:
                failed += 1
                results.append({"file": str(path), "error": str(exc)})
                console.print(f"[red]{escape(str(path))}:[/red] {escape(str(exc))}", soft_wrap=True)
            except ModelError as exc:
                console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
                raise typer.Exit(2) from exc
            else:
                results.append(result.as_dict(file=str(path)))
                if not json_output:
                    typer.echo(f"{path}: {result.text}" if len(files) > 1 else result.text)
                    for command in result.commands:
                        typer.echo(f"  [command] {command['command']}" + (f" {command['argument']}" if command["argument"] else ""))
            progress.advance(task)
    if json_output:
        typer.echo(json.dumps(results, ensure_ascii=False, indent=2))
    if failed:
        raise typer.Exit(1)


class _NoProgress:
    """Stands in for the progress bar when output is not a terminal or there is one file."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def advance(self, task: int) -> None:
        return None
