"""``meshproof chaos run EXPERIMENT [--var K=V]``: a game day, always rolled back.

The work happens in :mod:`harness.chaos.runner`; this module prints Chaos Toolkit's log as it
comes (stderr) and the summary at the end (stdout), and exits with the run's verdict: 0 passed,
1 failed or deviated or left residue, 2 bad experiment or no mesh, 130 interrupted (rolled back).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.output import Output
from harness.settings import Settings


def cmd_chaos_run(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.chaos import runner

    experiment = Path(args.experiment)
    result = runner.run(experiment, settings, args.var, echo=None if args.json or args.quiet else out.note)
    if args.json:
        out.json(runner.summary_doc(result))
        return result.exit_code
    out.print("")
    lines = runner.summary_lines(result)
    out.print(lines[0], style="bold")
    for line in lines[1:-1]:
        out.print(line)
    out.print(lines[-1], style="bold green" if result.exit_code == 0 else "bold red")
    return result.exit_code
