"""`python -m orchestrator ...` is the `orchestrator` command."""

from orchestrator.cli.commands import run

if __name__ == "__main__":
    run()
