"""The command line, one face of the jobs (multisample.jobs): `app` assembles the commands
of `runs` (synthesize, sweep, select), `show`, `data` (train, export) and `setup` (models,
config); `common` holds what they share; `options` derives options from settings classes."""

from __future__ import annotations


def main() -> None:
    """The `multisample` console script."""
    from multisample.engine.registry import PluginError

    try:
        from multisample.cli.app import app, load_plugins

        load_plugins()
    except PluginError as exc:
        # A broken component of another package: say which, before any command runs.
        from multisample.engine.terminal import STDERR

        STDERR.print("error:", exc, style="bold red", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    app()
