"""``python -m harness.chaos._child ARGS``: Chaos Toolkit's ``chaos`` command, interruptible.

The ``meshproof chaos run`` wrapper starts Chaos Toolkit through this module so that

- SIGINT always raises KeyboardInterrupt (also when the wrapper was started with SIGINT
  ignored, as background jobs of a non-interactive shell are): Chaos Toolkit then marks the run
  interrupted, stops the method and plays the rollbacks (``--rollback-strategy always``);
- the kernel sends SIGINT when the wrapper dies (PR_SET_PDEATHSIG), for the same reason.

SIGINT, not SIGTERM: Chaos Toolkit turns SIGTERM into an InterruptExecution that a running
python activity reports as its own failure, after which the method goes on.
"""

from __future__ import annotations

import os
import signal
import sys

from harness import proc


def main() -> None:
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    proc.set_parent_death_signal(signal.SIGINT)
    if os.getppid() != parent:  # the wrapper died before the signal was armed
        sys.exit(130)
    from chaostoolkit.cli import cli

    cli(prog_name="chaos")


if __name__ == "__main__":
    main()
