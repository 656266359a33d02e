"""Wake-ups for this process's waiters, per execution: a counter per
execution id that a change bumps, and a wait until it moves.

WaitExecution waits on status changes (records.py), WatchExecution on new
events (events.py); a change to one execution wakes only threads that wait
for it to look at storage again. Changes written by another control plane
are not signalled here: waiters also poll storage, every POLL_SECONDS.
Nothing here reads or writes storage.
"""

from __future__ import annotations

import collections
import threading

POLL_SECONDS = 1.0  # how soon a change made by another control plane is seen
_MAX_TRACKED = 10_000  # execution ids remembered (least recently changed dropped first)


class Signals:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._seq: collections.OrderedDict[str, int] = collections.OrderedDict()

    def seq(self, execution_id: str) -> int:
        """The execution's change counter; read it before reading storage."""
        with self._changed:
            return self._seq.get(execution_id, 0)

    def notify(self, execution_id: str) -> None:
        with self._changed:
            self._seq[execution_id] = self._seq.get(execution_id, 0) + 1
            self._seq.move_to_end(execution_id)
            if len(self._seq) > _MAX_TRACKED:
                self._seq.popitem(last=False)  # a forgotten id's waiter wakes (0 != seen) and re-reads
            self._changed.notify_all()

    def wait(self, execution_id: str, seen: int, timeout: float) -> bool:
        """Until the counter moves past `seen` or `timeout` passes; True when it moved."""
        with self._changed:
            return self._changed.wait_for(lambda: self._seq.get(execution_id, 0) != seen, timeout)
