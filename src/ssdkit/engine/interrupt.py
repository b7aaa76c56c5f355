"""SIGINT / SIGTERM during training: finish the step, save a checkpoint through the run's saver, stop cleanly.

:class:`StopRequest` (a context manager around ``trainer.run``) turns the first SIGINT or SIGTERM into a request
the trainer's handlers read after each step; the run then saves ``checkpoint_<iteration>.pt`` (the same
``Checkpoint`` and :class:`~ssdkit.engine.handlers.CheckpointSaver` as every other checkpoint), writes its summary
and ``train`` raises :class:`TrainingInterrupted`. A second signal of the same kind stops at once (SIGINT:
``KeyboardInterrupt``; SIGTERM: the default action). When distributed, every process stops after the same step
(:func:`ssdkit.engine.step.create_train_step` agrees on it with the step's collective). DataLoader workers
ignore SIGINT (:class:`IgnoreSigintInWorkers`), so a Ctrl-C that reaches the whole process group does not kill
them under the running step.

Exit status: the CLI exits with :attr:`TrainingInterrupted.exit_status`, the shell's 128 + signal number
(130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable

from ssdkit.errors import SSDKitError

__all__ = ["TrainingInterrupted", "StopRequest", "IgnoreSigintInWorkers", "SIGNALS"]

logger = logging.getLogger("ssdkit.train")

#: The signals a run stops on, by the code the processes agree on (0: none).
SIGNALS = {1: "SIGINT", 2: "SIGTERM"}
_CODES = {signal.SIGINT: 1, signal.SIGTERM: 2}


class TrainingInterrupted(SSDKitError):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint.

    Attributes:
        signal: ``"SIGINT"`` or ``"SIGTERM"``.
        exit_status: 128 + the signal number (130, 143), what a shell reports for a process the signal ended.
        checkpoint: the checkpoint written (resume from it), or None when the run had not completed a step.
        summary: the run's summary dict (also in ``summary.json``).
    """

    def __init__(self, message: str, signal_name: str, checkpoint: str | None = None,
                 summary: dict | None = None) -> None:
        super().__init__(message)
        self.signal = signal_name
        self.exit_status = 128 + int(getattr(signal, signal_name, signal.SIGTERM))
        self.checkpoint = checkpoint
        self.summary = summary or {}


class StopRequest:
    """Records the first SIGINT / SIGTERM while entered (main thread only; elsewhere it records nothing).

    ``code`` is 0, or the key of :data:`SIGNALS` of the signal received; ``signal`` its name or None.
    ``forward``: also send SIGTERM to this process's ``multiprocessing`` children (the parent of spawned
    training processes, which receives the signal a terminal or a job scheduler sends). ``announce``: log the
    signal (one process of a distributed run does).
    """

    def __init__(self, forward: bool = False, announce: bool = True) -> None:
        self.code = 0
        self.forward = forward
        self.announce = announce
        self._previous: dict[int, Callable | int | None] = {}

    @property
    def signal(self) -> str | None:
        return SIGNALS.get(self.code)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in _CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.forward:
            for child in multiprocessing.active_children():
                if child.pid is not None:
                    os.kill(child.pid, signal.SIGTERM)
        code = _CODES[signum]
        if self.code == code:  # asked twice: stop now
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        if self.code == 0:
            self.code = code
            if not self.announce:
                return
            again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            logger.warning("%s received: stopping after this step with a checkpoint (%s again stops at once)",
                           SIGNALS[code], again)


class IgnoreSigintInWorkers:
    """A DataLoader ``worker_init_fn`` that ignores SIGINT, then calls ``inner`` (picklable for any start method).

    The main process handles Ctrl-C (:class:`StopRequest`) and shuts its workers down itself.
    """

    def __init__(self, inner: Callable[[int], None] | None) -> None:
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.inner is not None:
            self.inner(worker_id)
