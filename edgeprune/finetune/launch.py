"""``edgeprune finetune --nproc-per-node N``: torchrun for the user, in a subprocess (``python -m edgeprune.finetune.launch``).

The subprocess is ``torch.distributed.run`` itself (its own argument parser
and ``run``), with one difference from the ``torchrun`` command: when a rank
fails, the exit status is that rank's (1 an error, 2 the accuracy gate,
130 interrupted), and torchrun's multi-line failure summary and log lines are left out
(``LOGLEVEL=INFO`` shows the log): the ranks have already said what went
wrong (rank 0 in one line).

Example::

    python -m edgeprune.finetune.launch --standalone --nproc-per-node 2 -m edgeprune finetune -m m.ept -d digits -o out
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run


def command(nproc_per_node: int, finetune_args: list[str]) -> list[str]:
    """The command line that runs ``edgeprune finetune FINETUNE_ARGS`` in ``nproc_per_node`` processes here."""
    return [sys.executable, "-m", "edgeprune.finetune.launch", "--standalone", "--nproc-per-node",
            str(nproc_per_node), "-m", "edgeprune", "finetune", *finetune_args]


def launch(nproc_per_node: int, finetune_args: list[str], *, stdout=None) -> int:
    """Run ``edgeprune finetune FINETUNE_ARGS`` in ``nproc_per_node`` processes here; returns its exit status.

    Used by ``edgeprune finetune --nproc-per-node`` and by deploy's fine-tune stage. The launcher runs in
    its own session: Ctrl-C here reaches it once (forwarded as SIGINT), it stops the ranks and rank 0
    saves its checkpoint; the same command then resumes, at any process count.
    """
    proc = subprocess.Popen(command(nproc_per_node, finetune_args), start_new_session=True, stdout=stdout)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()


def main(argv: list[str]) -> int:
    if "LOGLEVEL" not in os.environ:  # torchrun's own log lines (thread banner, SIGTERMs sent) unless asked for
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("torch.distributed"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(argv)
    try:
        run(args)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        return 128 + (-code) if code < 0 else (code or 1)  # killed by a signal: the shell's 128 + N
    except (KeyboardInterrupt, SignalException):  # Ctrl-C: the ranks were stopped, rank 0 saved its checkpoint
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
