"""Run independent tasks over the machine's cores with a bounded number in flight.

Results come back in completion order; callers make their output independent of that order
(each task carries its own seed and its own place in the output), so the result is the same for
any number of workers.
"""
import multiprocessing
import os
import queue
import signal


def default_workers():
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def _ignore_sigint():
    """Ctrl-C reaches every process of the terminal's group: the workers leave it to the
    parent, which stops the pool and prints one line, instead of each printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    done = queue.Queue()  # results as they finish, pushed by the pool's result thread
    with ctx.Pool(workers, initializer=_ignore_sigint) as pool:
        in_flight = 0
        it = iter(tasks)
        exhausted = False
        while in_flight or not exhausted:
            while not exhausted and in_flight < max_pending:
                try:
                    task = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pool.apply_async(func, (task,), callback=lambda r: done.put((True, r)),
                                 error_callback=lambda e: done.put((False, e)))
                in_flight += 1
            if not in_flight:
                break
            ok, value = done.get()
            in_flight -= 1
            if not ok:
                raise value
            yield value
