"""Workers: claim runs from the queue, keep their leases alive, enforce limits, execute them.

A `Slot` runs one claimed run at a time. While it runs, a watchdog thread heartbeats the lease
every `heartbeat_s` and:
- stops the process at once when the lease was lost (another worker may own the run now: two
  executions of one run must never overlap);
- stops the process when it could not renew the lease for `FENCE` of its length (the metadata DB is
  unreachable, or this machine is so loaded that heartbeats came late): it fences itself off before
  the lease can run out and another worker may claim the run;
- on a cancel request, asks the executor to stop between steps, and after `grace_s` stops the
  process (hard cancel), never inside a publish;
- when a step runs past its `timeout_s`, records a TIMEOUT and stops the process; the run goes back
  to the queue once (TIMEOUT is retried once), then fails.
"Stopping the process" is `os._exit`: a step may be inside a driver call nothing else can interrupt.
The supervisor (`Pool`) starts a fresh slot process in its place.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..store.queue import Claim, RunQueue
from .control import RunControl

log = logging.getLogger(__name__)

EXIT_LEASE_LOST = 70
EXIT_HARD_STOP = 75
FENCE = 0.75  # a worker that could not renew its lease for this part of it stops itself


def owner_name(slot: int | str = 0) -> str:
    """Who holds a lease: host, process and slot (shown in `runs show` and in events)."""
    return f"{socket.gethostname()}:{os.getpid()}:{slot}"


class ClaimRunner(Protocol):
    """Executes one claimed run (the workspace provides this), returning its final status."""

    def __call__(self, claim: Claim, control: RunControl) -> str: ...


class HardStop(Protocol):
    """Records why a run is being stopped from outside (cancel, timeout) before the process exits."""

    def __call__(self, claim: Claim, reason: str, step: str | None) -> None: ...


def die(code: int) -> None:
    """Leave now, without cleanup that could touch the run (another worker may own it already)."""
    logging.shutdown()
    os._exit(code)


@dataclass
class Watchdog:
    queue: RunQueue
    claim: Claim
    control: RunControl
    hard_stop: HardStop
    heartbeat_s: float
    grace_s: float
    exit: Callable[[int], None] = die
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    cancel_seen_at: float | None = None
    renewed_at: float = 0.0  # monotonic: when the last successful renewal was sent
    _lost: bool = False  # a heartbeat found the lease held by somebody else (or by nobody)
    _failed: bool = False  # the last heartbeat raised

    def __enter__(self) -> Watchdog:
        self._thread = threading.Thread(target=self._watch, name=f"watchdog-{self.claim.run_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        tick = min(self.heartbeat_s, 0.5)
        next_beat = time.monotonic() + self.heartbeat_s
        self.renewed_at = self.claim.at
        fence = self.queue.lease.total_seconds() * FENCE
        beater: threading.Thread | None = None
        while not self._stop.wait(tick):
            # Checked every tick, whatever the heartbeat is doing: a heartbeat stuck in a driver
            # call (a lock wait, a dead network) must not keep this process past the fence.
            if time.monotonic() - self.renewed_at > fence:
                log.error(
                    "could not renew the lease of run %s for %.1f s; stopping this worker process "
                    "before another worker may claim it",
                    self.claim.run_id,
                    time.monotonic() - self.renewed_at,
                )
                self.exit(EXIT_LEASE_LOST)
                return
            if self._lost:
                log.error("lease of run %s was lost; stopping this worker process", self.claim.run_id)
                self.exit(EXIT_LEASE_LOST)
                return
            overdue = self.control.overdue()
            if overdue is not None:
                late, limit = overdue
                self.hard_stop(
                    self.claim, f"step '{late}' ran longer than its timeout_s of {limit:g} s", late
                )
                self.exit(EXIT_HARD_STOP)
                return
            seen = self.cancel_seen_at
            if seen is not None and not self.control.publishing and time.monotonic() - seen > self.grace_s:
                current = self.control.step
                self.hard_stop(
                    self.claim,
                    "cancelled (hard stop after the grace period)",
                    current[0] if current else None,
                )
                self.exit(EXIT_HARD_STOP)
                return
            if beater is not None and beater.is_alive():
                continue
            if self._failed:  # try again soon, not a whole heartbeat later
                self._failed = False
                next_beat = min(next_beat, time.monotonic() + tick)
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.heartbeat_s
            beater = threading.Thread(target=self._beat, name=f"heartbeat-{self.claim.run_id}", daemon=True)
            beater.start()

    def _beat(self) -> None:
        """One heartbeat, in its own thread so the watchdog keeps its deadlines meanwhile."""
        sent = time.monotonic()
        try:
            beat = self.queue.heartbeat(self.claim.run_id, self.claim.owner)
        except Exception:  # the metadata DB may be restarting: keep trying until the fence
            log.warning("heartbeat of run %s failed", self.claim.run_id, exc_info=True)
            self._failed = True
            return
        if beat is None:
            self._lost = True
            return
        self.renewed_at = max(self.renewed_at, sent)
        if beat.cancel_requested and self.cancel_seen_at is None:
            self.cancel_seen_at = time.monotonic()
            self.control.cancel.set()


@dataclass
class Slot:
    """Claims and runs one run at a time until told to stop."""

    queue: RunQueue
    runner: ClaimRunner
    hard_stop: HardStop
    owner: str
    heartbeat_s: float = 10.0
    grace_s: float = 30.0
    poll_s: float = 0.5
    stop: threading.Event = field(default_factory=threading.Event)
    exit: Callable[[int], None] = die
    _waiting_for_leases: bool = False  # logged once per wait

    def run_one(self) -> tuple[str, str] | None:
        """Claim and execute one run: (run id, final status), or None when nothing was runnable."""
        claim = self.queue.claim(self.owner)
        if claim is None:
            return None
        return claim.run_id, self.execute(claim)

    def execute(self, claim: Claim) -> str:
        control = RunControl()
        try:
            with Watchdog(
                self.queue, claim, control, self.hard_stop, self.heartbeat_s, self.grace_s, self.exit
            ):
                status = self.runner(claim, control)
        finally:  # after the watchdog stopped: a heartbeat without the lease would mean "lost"
            with contextlib.suppress(Exception):
                self.queue.release(claim.run_id, claim.owner)
        return status

    def _drained(self) -> bool:
        """Whether nothing is left that this worker could ever take: no run queued (nor waiting out
        a retry backoff), and no run running under a lease. A lease may belong to a worker that died
        (its run comes back to the queue when the lease runs out, and this worker resumes it) or to
        a live one (its run may still come back, if that worker dies): either way, a drain waits."""
        try:
            left = self.queue.outstanding()
        except Exception:  # the metadata DB is unreachable: not drained yet
            log.warning("looking for runs left to drain failed", exc_info=True)
            return False
        if left.leased and not left.queued and not self._waiting_for_leases:
            log.info(
                "queue empty; waiting for %d run%s held under a lease (latest renewed until %s): "
                "finished by its worker, or resumed here if that worker died",
                left.leased,
                "" if left.leased == 1 else "s",
                left.leases_until,
            )
        self._waiting_for_leases = bool(left.leased and not left.queued)
        return not left

    def run_forever(self, max_runs: int | None = None, drain: bool = False) -> int:
        """Claim and run until stopped; with `drain`, until nothing is left to take (`_drained`):
        a queued run in a retry backoff, or a running one whose lease may run out, is waited for."""
        done = 0
        while not self.stop.is_set() and (max_runs is None or done < max_runs):
            try:
                ran = self.run_one()
            except Exception:  # the metadata DB is down or restarting: wait and try again
                log.warning("claiming or running a run failed; trying again", exc_info=True)
                self.stop.wait(min(5.0, self.poll_s * 4))
                continue
            if ran is None:
                if drain and self._drained():
                    break
                self.stop.wait(self.poll_s)
            else:
                done += 1
                log.info("run %s %s", *ran)
        return done


# ---------------------------------------------------------------- processes

SlotFactory = Callable[[int, threading.Event], Slot]


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when its parent dies, so a SIGKILLed supervisor never
    leaves slot processes behind. A parent that died while this process was still starting is
    caught by comparing the parent's pid."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        die(EXIT_LEASE_LOST)


def slot_main(
    factory: Callable[..., Slot],
    args: tuple[Any, ...],
    index: int,
    drain: bool,
    max_runs: int | None,
    parent: int,
) -> None:
    """Entry point of a slot process: run until SIGTERM (finish the current run first), or until
    the queue is drained / `max_runs` are done (then exit 0: the supervisor does not replace it)."""
    _die_with_parent(parent)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(processName)s %(message)s", stream=sys.stderr
    )
    stop = threading.Event()

    def graceful(signum: int, frame: Any) -> None:
        if stop.is_set():
            die(EXIT_HARD_STOP)
        stop.set()

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, graceful)
    slot = factory(*args, index=index, stop=stop)
    slot.run_forever(max_runs=max_runs, drain=drain)


@dataclass
class Pool:
    """`queryforge worker --concurrency N`: N slot processes, each replaced when it dies (a kill, a
    lost lease, a step stopped by its time limit or a hard cancel)."""

    factory: Callable[..., Slot]  # picklable: a module-level function
    args: tuple[Any, ...]
    concurrency: int
    drain: bool = False
    max_runs: int | None = None
    on_slot_died: Callable[[int], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        procs: dict[int, Any] = {}

        def start(i: int) -> None:
            procs[i] = ctx.Process(
                target=slot_main,
                args=(self.factory, self.args, i, self.drain, self.max_runs, os.getpid()),
                name=f"qf-slot-{i}",
            )
            procs[i].start()

        for i in range(self.concurrency):
            start(i)
        if threading.current_thread() is threading.main_thread():  # SIGTERM: stop like Ctrl-C does
            signal.signal(signal.SIGTERM, lambda signum, frame: self.stop.set())
        try:
            while procs and not self.stop.wait(0.2):
                for i, proc in list(procs.items()):
                    if proc.is_alive():
                        continue
                    if proc.exitcode == 0:  # drained, or did its max_runs
                        del procs[i]
                        continue
                    log.warning("slot %d exited with %s; starting a new one", i, proc.exitcode)
                    if self.on_slot_died is not None:
                        self.on_slot_died(proc.exitcode)
                    start(i)
        finally:
            for proc in procs.values():
                if proc.is_alive():
                    proc.terminate()  # SIGTERM: finish the current run, then exit
            for proc in procs.values():
                proc.join()


@dataclass
class ThreadPool:
    """`queryforge worker --in-process`: the slots are threads of this process (the embedded pool of
    the local default: no process start-up, one set of connections to the metadata DB).

    A thread cannot be stopped inside a driver call, so what stops a slot process in `Pool` (a lost
    lease, a step over its time limit, a hard cancel) stops this whole process here; the other runs
    it held keep their leases until they run out and are then resumed by the next worker."""

    slots: list[Slot]
    drain: bool = False
    max_runs: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for slot in self.slots:
            slot.stop = self.stop
        threads = [
            threading.Thread(
                target=slot.run_forever,
                kwargs={"max_runs": self.max_runs, "drain": self.drain},
                name=f"qf-slot-{i}",
                daemon=True,
            )
            for i, slot in enumerate(self.slots)
        ]
        for thread in threads:
            thread.start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda signum, frame: self.stop.set())
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(0.2)
        finally:  # Ctrl-C: the current runs finish first
            self.stop.set()
            for thread in threads:
                thread.join()
