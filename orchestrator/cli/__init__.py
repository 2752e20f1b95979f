"""The command line: the `orchestrator` subcommands and what they print (progress, summaries, comparisons)."""
