"""Run independent tasks over the machine's cores with a bounded number in flight.

Results come back in completion order; callers make their output independent of that order
(each task carries its own seed and its own place in the output), so the result is the same for
any number of workers.
"""
import errno
import multiprocessing
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool


def default_workers():
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def _ignore_sigint():
    """Ctrl-C reaches every process of the terminal's group: the workers leave it to the
    parent, which stops the pool and prints one line, instead of each printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _submit(pool, func, task):
    """pool.submit; the first call forks the workers, with Ctrl-C blocked while it does so: a
    worker must not be interrupted before its initializer has made it ignore SIGINT (it
    would print a traceback). The parent gets a Ctrl-C of that moment right after."""
    if not hasattr(signal, "pthread_sigmask"):
        return pool.submit(func, task)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(func, task)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run_tasks(func, tasks, workers=None, max_pending=None):
    """Yield func(task) for every task, in completion order.

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
    # A process pool that notices a worker dying (killed, out of memory) and says so; a
    # multiprocessing.Pool loses the task and waits for its result for ever.
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint) as pool:
        it = iter(tasks)
        pending = set()
        exhausted = False
        try:
            while pending or not exhausted:
                while not exhausted and len(pending) < max_pending:
                    try:
                        task = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.add(_submit(pool, func, task))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BrokenProcessPool:
            raise ChildProcessError(errno.ECHILD, "a worker process died (killed, or out of "
                                    "memory?); run again, with fewer --workers if memory is "
                                    "short") from None
        finally:
            for future in pending:     # an error or Ctrl-C: drop what has not started
                future.cancel()
