"""A torchrun-style script that shows what its launcher gave it; it needs no torch and talks to no peer.

It prints `contract {json}` (its arguments and torchrun's variables) to stdout, draws a progress bar
on stderr with carriage returns as tqdm does, prints `done`, and before that, if asked:
  --usage-error         exits as argparse does on a bad argument (usage on stderr, exit code 2)
  --kill-once PATH      SIGKILLs itself, as the OOM killer would, unless PATH exists (it creates PATH first)
Every other argument is only reported.
"""

import argparse
import json
import os
import signal
import sys

PRELOADED = "torch" in sys.modules
"""Whether the script runs in a process started ahead (a worker's script host imports torch while it waits)."""

ENV_KEYS = [
    "RANK",
    "WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING",
    "PYTHONBREAKPOINT",
]


def main() -> None:
    seen = {"argv": sys.argv[1:], "env": {key: os.environ.get(key) for key in ENV_KEYS}, "preloaded": PRELOADED}
    print("contract " + json.dumps(seen), flush=True)
    for percent in range(0, 101, 10):
        sys.stderr.write(f"\rprogress {percent:3d}%")
        sys.stderr.flush()
    sys.stderr.write("\n")
    if "--usage-error" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--steps", type=int, required=True)
        parser.parse_args([])  # prints the usage and exits with code 2
    if "--kill-once" in sys.argv:
        marker = sys.argv[sys.argv.index("--kill-once") + 1]
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
    print("done", flush=True)


if __name__ == "__main__":
    main()
