"""Run independent tasks over the machine's cores with a bounded number in flight.

Results come back in completion order; callers make their output independent of that order
(each task carries its own seed and its own place in the output), so the result is the same for
any number of workers.
"""
import errno
import multiprocessing
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool


def default_workers():
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def _ignore_sigint():
    """Ctrl-C reaches every process of the terminal's group: the workers leave it to the
    parent, which stops the pool and prints one line, instead of each printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_tasks(func, tasks, workers=None, max_pending=None):
    """Yield func(task) for every task, in completion order.

    Callers close the generator when they stop early (`contextlib.closing`): the worker
    processes are then stopped at once. Left to the garbage collector, a generator abandoned
    by an exception (Ctrl-C) may only be closed at interpreter exit, after the pool's manager
    thread is gone, and waiting for the workers would then never end.

    At most `max_pending` results wait in memory (the augmentation's results are megabytes each,
    and the consumer, an LMDB writer, may be slower than the workers).
    """
    workers = default_workers() if workers is None else int(workers)
    if workers <= 1:
        for task in tasks:
            yield func(task)
        return
    max_pending = max_pending or 2 * workers
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    interrupted = threading.Event()
    previous = _catch_sigint(interrupted)
    # A process pool that notices a worker dying (killed, out of memory) and says so; a
    # multiprocessing.Pool loses the task and waits for its result for ever.
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint)
    pending = set()
    try:
        it = iter(tasks)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < max_pending:
                try:
                    task = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending.add(pool.submit(func, task))
            if not pending:
                break
            finished = set()
            while not finished:
                if interrupted.is_set():
                    raise KeyboardInterrupt
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
        if interrupted.is_set():
            raise KeyboardInterrupt
    except BrokenProcessPool:
        raise ChildProcessError(errno.ECHILD, "a worker process died (killed, or out of "
                                "memory?); run again, with fewer --workers if memory is "
                                "short") from None
    finally:
        # Workers finish the task in hand (they ignore Ctrl-C) and stop; nothing new starts.
        pool.shutdown(wait=True, cancel_futures=True)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _catch_sigint(event):
    """While the pool runs, Ctrl-C only sets `event`; run_tasks raises KeyboardInterrupt at
    a point of its own choosing. Raised anywhere (inside the pool's own bookkeeping while it
    starts its workers), it can leave workers that nobody tells to stop, and the process then
    waits for them at exit for ever. Returns the handler to restore (None off the main
    thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, lambda signum, frame: event.set())
