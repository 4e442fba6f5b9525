"""`trygg rules ...` commands (placeholder until the engine lands)."""

import typer

app = typer.Typer(help="Check, test and replay the rule catalogue.", no_args_is_help=True)
