"""python -m worker: claim, run, heartbeat, stop cleanly on SIGTERM/SIGINT."""

import sys

from worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
