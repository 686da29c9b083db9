"""Caffe's Solver: the training loop, testing, snapshots and restore (solver.cpp, sgd_solver.cpp).

`Solver` holds everything the six solver types share: the train net and test nets built from the
solver prototxt, `step(n)` / `solve()` with Caffe's order of events, `apply_update()` (learning
rate, gradient clipping, 1/iter_size, weight decay, the type's update rule, w -= update),
snapshots named `<prefix>_iter_N.caffemodel/.solverstate` (`.caffemodel.h5/.solverstate.h5` with
`snapshot_format: HDF5`), and `restore(path)`. The update rules live in solvers.py. pycaffe's
names are kept: `net`, `test_nets`, `iter`, `step`, `solve`, `snapshot`, `restore`,
`apply_update`, `add_callback`, `share_weights`, `param`, `lr`.
"""
import collections
import copy
import logging
import os
import sys
import time

import numpy as np
import torch

from deepmammo.atomic import remove_stale_temporaries, write_bytes
from deepmammo.caffe import lr_policy
from deepmammo.caffe.formats import hdf5 as _hdf5
from deepmammo.caffe.net import resolve_losses
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.caffe.train_log import TrainLog, fmt

logger = logging.getLogger(__name__)

TRAIN, TEST = pb.TRAIN, pb.TEST

# Losses kept on the device between two read-backs at most (display: 0 never reads them).
_MAX_PENDING_LOSSES = 1000


class SolverError(ValueError):
    """A solver prototxt or solverstate that Caffe would refuse; the message names the file."""


class UpdateGroup(collections.namedtuple("UpdateGroup", "index local_rate decay")):
    """Learnable blobs (indices into net.learnable_params) sharing a local rate and decay."""


# ---------------------------------------------------------------------------- reading the solver

def read_solver_param(param, source=None):
    """(SolverParameter, source name) from a path or a SolverParameter, upgraded as Caffe does.

    Upgrades: the legacy `solver_type` enum becomes `type`; an unset `snapshot_prefix` becomes the
    solver file's path without its extension, and a prefix that is a folder gets the file's stem
    appended (UpgradeSnapshotPrefixProperty).
    """
    if isinstance(param, (str, os.PathLike)):
        from deepmammo.caffe.formats.prototxt import read_solver
        source = os.fspath(param)
        param = read_solver(source)
    else:
        param = copy.deepcopy(param)
        source = source or "<solver>"
    from deepmammo.caffe.formats.upgrade import UpgradeError, upgrade_solver
    try:
        upgrade_solver(param, source)
    except UpgradeError as exc:
        raise SolverError(str(exc)) from None
    if os.path.isfile(source):
        if not param.HasField("snapshot_prefix"):
            param.snapshot_prefix = os.path.splitext(source)[0]
        elif os.path.isdir(param.snapshot_prefix):
            stem = os.path.splitext(os.path.basename(source))[0]
            param.snapshot_prefix = os.path.join(param.snapshot_prefix, stem)
    return param, source


def _resolve(path, source):
    """A file named in a solver: relative to the working directory as in Caffe; when it is not
    there, relative to the solver file's folder (where Caffe would stop with an error)."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    base = os.path.dirname(os.path.abspath(source)) if source and os.path.isfile(source) else None
    if base and os.path.exists(os.path.join(base, path)):
        return os.path.join(base, path)
    raise FileNotFoundError(f"{source}: net file {path!r} not found (relative to the working "
                            f"directory {os.getcwd()!r} or to the solver's folder)")


def _read_net_param(path, source):
    from deepmammo.caffe.formats.prototxt import read_net
    return read_net(_resolve(path, source))


def build_net(net_param, source="<net>"):
    """Our Net from a NetParameter whose `state` says phase, level and stages."""
    from deepmammo.caffe.net import Net
    net_param = copy.deepcopy(net_param)
    stages = list(net_param.state.stage)
    net_param.state.ClearField("stage")   # Net() adds the stages it is given
    return Net(net_param, net_param.state.phase, level=net_param.state.level, stages=stages,
               source=source)


# ---------------------------------------------------------------------------------- the solver

class Solver:
    """The parts of Caffe's Solver/SGDSolver every update rule shares.

    Subclasses set `type`, `history_per_param` and implement `compute_update_value(i, rate)`.
    """
    type = None
    history_per_param = 1
    # False: the per-blob update (compute_update_value), kept as the reference the fused one
    # is tested against.
    fused_update = True
    # False: each iteration's loss is read back from the device at once instead of at the
    # display (the reference the deferred losses are timed against).
    defer_losses = True

    def __init__(self, param, source=None, rank=None, world_size=None, log=None,
                 net_factory=None, weights=None):
        """`rank` / `world_size` default to caffe.solver_rank() / solver_count(), as Caffe's
        solver reads Caffe::solver_rank() (its seed, and whether it is the root solver)."""
        from deepmammo.caffe import distributed
        rank = distributed.solver_rank() if rank is None else rank
        world_size = distributed.solver_count() if world_size is None else world_size
        self.param, self.source = read_solver_param(param, source)
        if weights is not None:
            # caffe train --weights replaces the solver's own `weights`; --snapshot clears them.
            self.param.ClearField("weights")
            if weights:
                self.param.weights.append(weights)
        self.rank, self.world_size = rank, world_size
        self.log = log or TrainLog()
        self._net_factory = net_factory or build_net
        self.callbacks = []          # objects with on_start() / on_gradients_ready()
        self.action_request = None   # callable -> "none" | "stop" | "snapshot" (signals)
        self.requested_early_exit = False
        self.progress = sys.stderr.isatty() and rank == 0
        self.iter = 0
        self.current_step = 0
        self._check()
        # Caffe's order: seed (each worker its own: random_seed + rank), then the train net,
        # then the test nets, all drawing from this thread's stream (docs/random-streams.md).
        if self.param.random_seed >= 0:
            _set_random_seed(self.param.random_seed + rank)
        self.random_stream = _random_stream()
        self._log(f"Random stream: {self.random_stream}")
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        self._losses, self._smoothed_loss = [], 0.0
        self._iterations_last = 0
        self.history = [torch.zeros_like(b.tdata)
                        for _ in range(self.history_per_param)
                        for b in self.net.learnable_params]
        self.log.set_columns(self._csv_columns())

    # ------------------------------------------------------------------ construction
    def _check(self):
        p = self.param
        if p.average_loss < 1:
            raise SolverError(f"{self.source}: average_loss must be >= 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise SolverError(f"{self.source}: iter_size must be >= 1, got {p.iter_size}")
        if p.lr_policy not in lr_policy.POLICIES:
            raise SolverError(f"{self.source}: unknown lr_policy {p.lr_policy!r} "
                              f"(one of {', '.join(lr_policy.POLICIES)})")
        if p.regularization_type not in ("L1", "L2"):
            raise SolverError(f"{self.source}: unknown regularization_type "
                              f"{p.regularization_type!r} (L1 or L2)")
        if p.snapshot and not p.HasField("snapshot_prefix"):
            raise SolverError(f"{self.source}: snapshot is set but snapshot_prefix is not")
        try:
            lr_policy.learning_rate(p, 0)   # a missing stepsize or gamma fails now, not later
        except lr_policy.LRPolicyError as exc:
            raise SolverError(f"{self.source}: {exc}") from None
        self.check_param()
        if p.snapshot and self.rank == 0:
            self._probe_snapshot_prefix()

    def check_param(self):
        """Type-specific checks (AdaGrad and RMSProp refuse momentum)."""

    def _probe_snapshot_prefix(self):
        probe = self.snapshot_filename(".tempfile")
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as exc:
            raise SolverError(f"{self.source}: cannot write to snapshot prefix "
                              f"{self.param.snapshot_prefix!r} ({exc}); make sure that the "
                              "folder exists and is writable") from None

    def _init_train_net(self):
        p = self.param
        given = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if len(given) != 1:
            raise SolverError(f"{self.source}: the solver must name exactly one train net by one "
                              f"of net, net_param, train_net, train_net_param (found "
                              f"{', '.join(given) or 'none'})")
        field = given[0]
        if field in ("train_net_param", "net_param"):
            net_param = copy.deepcopy(getattr(p, field))
            where, label = f"specified in {field}", f"{self.source} ({field})"
        else:
            net_param = _read_net_param(getattr(p, field), self.source)
            where = f"from {field} file: {getattr(p, field)}"
            label = _resolve(getattr(p, field), self.source)
        # Solver defaults (TRAIN), then the net's own state, then the solver's train_state.
        state = pb.NetState(phase=TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        self._log(f"Creating training net {where}")
        net = self._net_factory(net_param, label)
        self._load_weights(net)
        return net

    def _init_test_nets(self):
        p = self.param
        generic = p.HasField("net") + p.HasField("net_param")
        specific = len(p.test_net_param) + len(p.test_net)
        if generic and len(p.test_iter) < specific or not generic and len(p.test_iter) != specific:
            raise SolverError(f"{self.source}: test_iter must be given once for each test net "
                              f"({len(p.test_iter)} test_iter for {specific} test nets)")
        instances = len(p.test_iter) if generic else specific
        if len(p.test_state) and len(p.test_state) != instances:
            raise SolverError(f"{self.source}: test_state must be given once per test net or not "
                              "at all")
        if instances and p.test_interval <= 0:
            raise SolverError(f"{self.source}: test nets need test_interval > 0")
        inline = f"{self.source} (test_net_param)"
        params = [(copy.deepcopy(n), "test_net_param", inline) for n in p.test_net_param]
        params += [(_read_net_param(f, self.source), f"test_net file: {f}",
                    _resolve(f, self.source)) for f in p.test_net]
        for _ in range(instances - len(params)):
            if p.HasField("net_param"):
                params.append((copy.deepcopy(p.net_param), "net_param",
                               f"{self.source} (net_param)"))
            else:
                params.append((_read_net_param(p.net, self.source), f"net file: {p.net}",
                               _resolve(p.net, self.source)))
        nets = []
        for i, (net_param, where, label) in enumerate(params):
            state = pb.NetState(phase=TEST)
            state.MergeFrom(net_param.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            net_param.state.CopyFrom(state)
            self._log(f"Creating test net (#{i}) specified by {where}")
            net = self._net_factory(net_param, label)
            self._load_weights(net)
            nets.append(net)
        return nets

    def _load_weights(self, net):
        for entry in self.param.weights:
            for path in entry.split(","):
                path = path.strip()
                if path:
                    self._log(f"Finetuning from {path}")
                    net.copy_from(path)

    # --------------------------------------------------------------------- the loop
    def step(self, iters):
        """Run `iters` iterations (each: maybe test, iter_size forward/backward, update)."""
        start_iter, stop_iter = self.iter, self.iter + iters
        self._losses, self._smoothed_loss = [], 0.0
        self._iterations_last = self.iter
        timer = shown = time.perf_counter()
        bar = _progress_bar(iters, self.iter, self.progress)
        forward_backward = self.net.forward_backward
        if self.defer_losses:
            forward_backward = getattr(self.net, "forward_backward_deferred", forward_backward)
        self._pending_losses = []
        try:
            while self.iter < stop_iter:
                self.net.clear_param_diffs()
                if (self.param.test_interval and self.iter % self.param.test_interval == 0
                        and (self.iter > 0 or self.param.test_initialization)):
                    if self.rank == 0:
                        self.test_all()
                    if self.requested_early_exit:
                        break
                for cb in self.callbacks:
                    cb.on_start()
                display = self.param.display and self.iter % self.param.display == 0
                # The losses stay on the device until a display (or the end of the step)
                # reads them back: no wait for the device inside an iteration.
                self._pending_losses.append(
                    (self.iter, [forward_backward() for _ in range(self.param.iter_size)]))
                if display or len(self._pending_losses) >= _MAX_PENDING_LOSSES:
                    self._settle_losses(start_iter)
                if display:
                    lapse = time.perf_counter() - timer
                    self._display(lapse)
                    timer = time.perf_counter()
                for cb in self.callbacks:
                    cb.on_gradients_ready()
                self.apply_update()
                if bar is not None:
                    bar.update(1)
                    if time.perf_counter() - shown >= 1.0:   # a read-back a second at most
                        self._settle_losses(start_iter)
                        bar.set_postfix(loss=f"{self._smoothed_loss:.4g}", refresh=False)
                        shown = time.perf_counter()
                request = self._requested_action()
                if ((self.param.snapshot and self.iter % self.param.snapshot == 0
                     and self.rank == 0) or request == "snapshot"):
                    self.snapshot()
                if request == "stop":
                    self.requested_early_exit = True
                    break
            self._settle_losses(start_iter)
        finally:
            self._pending_losses = []
            if bar is not None:
                bar.close()
            self.log.flush()

    def solve(self, resume_file=None):
        """Train to max_iter (from `resume_file` when given), snapshot, final display and test."""
        self.log.info(f"Solving {self.net.name}")
        self.log.info(f"Learning Rate Policy: {self.param.lr_policy}")
        self.requested_early_exit = False
        if resume_file:
            self.log.info(f"Restoring previous solver status from {resume_file}")
            self.restore(resume_file)
        start_iter = self.iter
        self.step(self.param.max_iter - self.iter)
        if (self.rank == 0 and self.param.snapshot_after_train
                and (not self.param.snapshot or self.iter % self.param.snapshot != 0)):
            self.snapshot()
        if self.requested_early_exit:
            self.log.info("Optimization stopped early.")
            self.log.flush()
            return
        if self.rank == 0 and self.param.display and self.iter % self.param.display == 0:
            # Forward only: the weights have been updated max_iter times already.
            outputs = self.net.forward()
            self._update_smoothed_loss(_net_loss(self.net, outputs), start_iter)
            self.log.info(f"Iteration {self.iter}, loss = {fmt(self._smoothed_loss)}")
            self.log.record(self.iter, {"loss": self._smoothed_loss})
        if (self.rank == 0 and self.param.test_interval
                and self.iter % self.param.test_interval == 0):
            self.test_all()
        self.log.info("Optimization Done.")
        self.log.flush()

    def _settle_losses(self, start_iter):
        """Read the losses of the iterations since the last display back from the device (one
        read-back) and fold them into the smoothed loss, in iteration order."""
        pending, self._pending_losses = self._pending_losses, []
        if not pending:
            return
        values = iter(resolve_losses([x for _, losses in pending for x in losses]))
        for iteration, losses in pending:
            loss = np.float32(0)
            for _ in losses:
                loss += np.float32(next(values))
            loss /= np.float32(self.param.iter_size)
            self._update_smoothed_loss(float(loss), start_iter, iteration)

    def _update_smoothed_loss(self, loss, start_iter, iteration=None):
        average = self.param.average_loss
        if len(self._losses) < average:
            self._losses.append(loss)
            n = len(self._losses)
            self._smoothed_loss = (self._smoothed_loss * (n - 1) + loss) / n
        else:
            idx = ((self.iter if iteration is None else iteration) - start_iter) % average
            self._smoothed_loss += (loss - self._losses[idx]) / average
            self._losses[idx] = loss

    def _display(self, lapse):
        if self.rank != 0:
            return
        n = self.param.display
        per_s = (self.iter - self._iterations_last) / (lapse or 1)
        self.log.info(f"Iteration {self.iter} ({fmt(per_s)} iter/s, {fmt(lapse)}s/{n} iters), "
                      f"loss = {fmt(self._smoothed_loss)}")
        self._iterations_last = self.iter
        weights = _loss_weights(self.net)
        row = {"loss": self._smoothed_loss}
        index = 0
        for name in self.net.outputs:
            values = np.asarray(self.net.blobs[name].data, dtype=np.float32).ravel()
            w = weights.get(name, 0.0)
            for k, v in enumerate(values):
                extra = f" (* {fmt(w)} = {fmt(np.float32(w) * v)} loss)" if w else ""
                self.log.info(f"    Train net output #{index}: {name} = {fmt(v)}{extra}")
                row[_column("train", name, k, len(values))] = float(v)
                index += 1
        self.log.record(self.iter, row)

    # ------------------------------------------------------------------- the update
    @property
    def lr(self):
        """The learning rate of the next update (pycaffe's SGDSolver.lr)."""
        return lr_policy.learning_rate(self.param, self.iter, self.current_step)[0]

    def local_rate(self, i, rate):
        return float(np.float32(rate) * np.float32(self.net.learnable_params[i].lr_mult))

    def apply_update(self):
        """Caffe's SGDSolver::ApplyUpdate for every solver type."""
        previous_step = self.current_step
        try:
            rate, self.current_step = lr_policy.learning_rate(
                self.param, self.iter, self.current_step)
        except lr_policy.LRPolicyError as exc:
            raise SolverError(f"{self.source}: {exc}") from None
        if self.param.lr_policy == "multistep" and self.current_step != previous_step:
            self._log(f"MultiStep Status: Iteration {self.iter}, step = {self.current_step}")
        if self.param.display and self.iter % self.param.display == 0 and self.rank == 0:
            self.log.info(f"Iteration {self.iter}, lr = {fmt(rate)}")
            self.log.record(self.iter, {"lr": rate})
        params = self.net.learnable_params
        with torch.no_grad():
            # No special case for frozen blobs (lr_mult 0): as in Caffe, their diffs are what
            # backward left (zero unless force_backward or sharing gave them a gradient) and
            # count in the clipping norm.
            self.clip_gradients()
            if self.uses_fused_update():
                self._apply_fused_update(rate)
            else:
                for i in range(len(params)):
                    self.normalize(i)
                    self.regularize(i)
                    self.compute_update_value(i, rate)
                for blob in params:
                    blob.tdata.sub_(blob.tdiff)
        self.iter += 1

    def uses_fused_update(self):
        """Whether apply_update runs the rule over all blobs at once (torch._foreach_* ops):
        `fused_update` is on and the solver type has a fused rule."""
        return (self.fused_update
                and type(self).compute_update_values is not Solver.compute_update_values)

    def _apply_fused_update(self, rate):
        """normalize, regularize, the rule and w -= step for every blob, each step one
        _foreach_* op per group of blobs that share (local rate, decay). The same elementwise
        ops in the same order as the per-blob path: on the CPU the results are bit-identical;
        on CUDA each op is one multi-tensor kernel instead of one launch per blob."""
        params = self.net.learnable_params
        diffs = [blob.tdiff for blob in params]
        if self.param.iter_size > 1:
            torch._foreach_mul_(diffs, float(np.float32(1) / np.float32(self.param.iter_size)))
        groups = self._update_groups(rate)
        for group in groups:
            if not group.decay:
                continue
            g = [diffs[i] for i in group.index]
            w = [params[i].tdata for i in group.index]
            if self.param.regularization_type == "L2":
                torch._foreach_add_(g, w, alpha=group.decay)
            else:
                torch._foreach_add_(g, torch._foreach_sign(w), alpha=group.decay)
        self.compute_update_values(diffs, groups)
        torch._foreach_sub_([blob.tdata for blob in params], diffs)

    def _update_groups(self, rate):
        """Blobs grouped by (local rate, decay): a _foreach_* op takes one scalar per call.
        The paper's nets have 3-6 groups (GoogLeNet's 116 blobs: 6)."""
        by_key = {}
        wd = np.float32(self.param.weight_decay)
        for i, blob in enumerate(self.net.learnable_params):
            key = (self.local_rate(i, rate), float(wd * np.float32(blob.decay_mult)))
            by_key.setdefault(key, []).append(i)
        return [UpdateGroup(index, lr, decay) for (lr, decay), index in by_key.items()]

    def compute_update_values(self, diffs, groups):
        """The fused rule: like compute_update_value for every blob at once (`diffs[i]` is
        blob i's tdiff; `groups` from _update_groups). Types without one use the per-blob
        path."""
        raise NotImplementedError

    def clip_gradients(self):
        clip = np.float32(self.param.clip_gradients)
        if clip < 0:
            return
        diffs = [blob.tdiff for blob in self.net.learnable_params]
        if not diffs:
            return
        # One read-back for all blobs; the sum runs in float32 in blob order, as Caffe's.
        dots = torch.stack([torch.dot(d.reshape(-1), d.reshape(-1)) for d in diffs])
        sumsq = np.float32(0)
        for value in dots.cpu().numpy():
            sumsq += np.float32(value)
        norm = np.float32(np.sqrt(sumsq))
        if norm > clip:
            scale = np.float32(clip / norm)
            self._log(f"Gradient clipping: scaling down gradients (L2 norm {fmt(norm)} > "
                      f"{fmt(clip)}) by scale factor {fmt(scale)}")
            if self.uses_fused_update():
                torch._foreach_mul_(diffs, float(scale))
            else:
                for d in diffs:
                    d.mul_(float(scale))

    def normalize(self, i):
        if self.param.iter_size > 1:
            self.net.learnable_params[i].tdiff.mul_(float(np.float32(1) /
                                                          np.float32(self.param.iter_size)))

    def regularize(self, i):
        blob = self.net.learnable_params[i]
        decay = float(np.float32(self.param.weight_decay) * np.float32(blob.decay_mult))
        if not decay:
            return
        if self.param.regularization_type == "L2":
            blob.tdiff.add_(blob.tdata, alpha=decay)
        else:
            blob.tdiff.add_(torch.sign(blob.tdata), alpha=decay)

    def compute_update_value(self, i, rate):
        raise NotImplementedError

    # ----------------------------------------------------------------------- testing
    def test_all(self):
        """Test every test net (rank 0 only, as in Caffe). Returns a list of {output: mean}."""
        results = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            results.append(self.test(i))
        return results

    def test(self, test_net_id=0):
        """Forward test_iter batches through one test net; log and return the mean outputs."""
        self.log.info(f"Iteration {self.iter}, Testing net (#{test_net_id})")
        net = self.test_nets[test_net_id]
        net.share_trained_params(self.net)
        n_iter = self.param.test_iter[test_net_id]
        scores, names, loss = None, [], np.float32(0)
        weights = _loss_weights(net)
        for k in range(n_iter):
            request = self._requested_action()
            while request not in (None, "none"):
                if request == "snapshot":
                    self.snapshot()
                elif request == "stop":
                    self.requested_early_exit = True
                request = self._requested_action()
            if self.requested_early_exit:
                self.log.info("Test interrupted.")
                return {}
            outputs = net.forward()
            if self.param.test_compute_loss:
                loss += np.float32(_net_loss(net, outputs))
            vec = []
            for name in net.outputs:
                values = np.asarray(outputs[name], dtype=np.float32).ravel()
                if k == 0:
                    names += [(name, j, values.size) for j in range(values.size)]
                vec.append(values)
            vec = np.concatenate(vec) if vec else np.zeros(0, np.float32)
            scores = vec.copy() if scores is None else scores + vec
        if self.param.test_compute_loss:
            self.log.info(f"Test loss: {fmt(loss / np.float32(n_iter))}")
        result, row = {}, {}
        for i, (name, j, count) in enumerate(names):
            mean = scores[i] / np.float32(n_iter)
            w = weights.get(name, 0.0)
            extra = f" (* {fmt(w)} = {fmt(np.float32(w) * mean)} loss)" if w else ""
            self.log.info(f"    Test net output #{i}: {name} = {fmt(mean)}{extra}")
            key = name if count == 1 else f"{name}_{j}"
            result[key] = float(mean)
            row[_column(f"test{test_net_id}", name, j, count)] = float(mean)
        self.log.record(self.iter, row)
        return result

    # --------------------------------------------------------------------- snapshots
    def snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self):
        """Write `<prefix>_iter_N.caffemodel` and `.solverstate` (each via a temporary name),
        or with `snapshot_format: HDF5` Caffe's `.caffemodel.h5` and `.solverstate.h5`."""
        hdf5 = self.param.snapshot_format == pb.SolverParameter.HDF5
        model_filename = self.snapshot_filename(".caffemodel.h5" if hdf5 else ".caffemodel")
        state_filename = self.snapshot_filename(".solverstate.h5" if hdf5 else ".solverstate")
        for path in (model_filename, state_filename):
            remove_stale_temporaries(path)  # a write killed mid-way (a run resumed here)
        if hdf5:
            self.log.info(f"Snapshotting to HDF5 file {model_filename}")
            self.net.save_hdf5(model_filename, write_diff=self.param.snapshot_diff)
            self.log.info(f"Snapshotting solver state to HDF5 file {state_filename}")
            _hdf5.write_solver_state(state_filename, self.iter, model_filename,
                                     self.current_step,
                                     [h.detach().cpu().numpy() for h in self.history])
        else:
            self.log.info(f"Snapshotting to binary proto file {model_filename}")
            net_param = _net_to_proto(self.net, self.param.snapshot_diff)
            write_bytes(model_filename, net_param.SerializeToString())
            self.log.info(f"Snapshotting solver state to binary proto file {state_filename}")
            write_bytes(state_filename,
                        self.solver_state(model_filename).SerializeToString())
        self.log.flush()
        return model_filename, state_filename

    def solver_state(self, learned_net=None):
        """This solver's SolverState (iter, learned_net, history, current_step)."""
        from deepmammo.caffe.formats.blobproto import array_to_blob
        state = pb.SolverState(iter=self.iter, current_step=self.current_step)
        if learned_net is not None:
            state.learned_net = learned_net
        for h in self.history:
            state.history.append(array_to_blob(h.detach().cpu().numpy()))
        return state

    def restore(self, path):
        """Continue from a solver state (ours or Caffe's; a name ending in .h5 is Caffe's HDF5
        state, as Caffe decides): iteration, weights, history."""
        path = os.fspath(path)
        if path.endswith(".h5"):
            self._restore_hdf5(path)
            return
        from deepmammo.caffe.formats.blobproto import blob_to_array
        from deepmammo.caffe.formats.solverstate import read_solverstate
        state = read_solverstate(path)
        if len(state.history) != len(self.history):
            raise SolverError(f"{path}: {len(state.history)} history blobs, but this "
                              f"{self.type} solver on this net keeps {len(self.history)}: "
                              "incorrect length of history blobs (another net or solver type?)")
        arrays = []
        for i, (blob, h) in enumerate(zip(state.history, self.history)):
            arr = blob_to_array(blob, where=f"{path}: history blob {i}")
            if arr.size != h.numel():
                raise SolverError(f"{path}: history blob {i} has {arr.size} values, the "
                                  f"net's blob has {h.numel()} ({tuple(h.shape)})")
            arrays.append(arr)
        self.iter = state.iter
        if state.HasField("learned_net"):
            self.net.copy_from(_find_learned_net(state.learned_net, path))
        self.current_step = state.current_step
        self._set_history(arrays)

    def _restore_hdf5(self, path):
        try:
            iteration, learned_net, current_step, arrays = _hdf5.read_solver_state(
                path, [tuple(h.shape) for h in self.history])
        except _hdf5.HDF5Error as exc:
            raise SolverError(str(exc)) from None
        self.iter = iteration
        if learned_net is not None:
            self.net.copy_from(_find_learned_net(learned_net, path))
        self.current_step = current_step
        self._set_history(arrays)

    def _set_history(self, arrays):
        self._log("SGDSolver: restoring history")
        with torch.no_grad():
            for arr, h in zip(arrays, self.history):
                h.copy_(torch.from_numpy(arr.reshape(tuple(h.shape))).to(h.device))

    # ------------------------------------------------------------------ pycaffe extras
    def add_callback(self, on_start, on_gradients_ready=None):
        """pycaffe's add_callback: call on_start() at the start of each iteration (after
        testing) and on_gradients_ready() after forward/backward, before the update. One
        argument: an object with both methods (e.g. caffe.NCCL)."""
        if on_gradients_ready is None:
            if not (hasattr(on_start, "on_start") and hasattr(on_start, "on_gradients_ready")):
                raise TypeError("add_callback takes on_start and on_gradients_ready callables, "
                                "or one object with on_start() and on_gradients_ready()")
            self.callbacks.append(on_start)
        else:
            self.callbacks.append(_Callback(on_start, on_gradients_ready))

    def share_weights(self, net):
        """Let `net` use this solver's train-net weights (layers of the same name)."""
        net.share_with(self.net)

    # ------------------------------------------------------------------------- misc
    def close(self):
        """Stop the nets' data prefetch threads and close their databases."""
        for net in [self.net] + list(self.test_nets):
            if hasattr(net, "close"):
                net.close()
        self.log.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _requested_action(self):
        return self.action_request() if self.action_request else None

    def _log(self, message):
        if self.rank == 0:
            self.log.info(message)

    def _csv_columns(self):
        cols = ["iteration", "lr", "loss"]
        cols += _output_columns("train", self.net)
        for i, net in enumerate(self.test_nets):
            cols += _output_columns(f"test{i}", net)
        return cols


# ------------------------------------------------------------------------------- helpers

class _Callback:
    """A pair of Python callables as a solver callback (pycaffe's SolverCallback)."""

    def __init__(self, on_start, on_gradients_ready):
        self._on_start, self._on_gradients_ready = on_start, on_gradients_ready

    def on_start(self):
        self._on_start()

    def on_gradients_ready(self):
        self._on_gradients_ready()


def _column(prefix, name, index, count):
    return f"{prefix}_{name}" if count == 1 else f"{prefix}_{name}_{index}"


def _output_columns(prefix, net):
    cols = []
    for name in net.outputs:
        count = int(np.prod(net.blobs[name].data.shape)) if name in net.blobs else 1
        cols += [_column(prefix, name, k, count) for k in range(count)]
    return cols


def _loss_weights(net):
    """{output name: loss weight} (pycaffe's blob_loss_weights, restricted to the outputs)."""
    weights = net.blob_loss_weights
    return {name: float(weights.get(name, 0.0)) for name in net.outputs}


def _net_loss(net, outputs):
    """The loss of the last forward: sum of loss_weight * loss top (Net::Forward's loss)."""
    loss = getattr(net, "last_loss", None)
    if loss is not None:
        return float(loss)
    total = np.float32(0)
    for name, w in _loss_weights(net).items():
        if w and name in outputs:
            total += np.float32(w) * np.float32(np.asarray(outputs[name], np.float32).sum())
    return float(total)


def _net_to_proto(net, write_diff):
    if write_diff:
        try:
            return net.to_net_param(with_diff=True)
        except TypeError:
            logger.warning("this Net cannot write diffs; snapshot_diff ignored")
    return net.to_net_param()


def _find_learned_net(learned_net, state_path):
    """Caffe opens learned_net relative to the working directory; a snapshot folder that moved
    since is also looked up beside the solverstate."""
    if os.path.isfile(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(state_path)),
                          os.path.basename(learned_net))
    if os.path.isfile(beside):
        return beside
    raise FileNotFoundError(f"{state_path}: its learned_net {learned_net!r} is missing (looked "
                            f"in the working directory and beside the solverstate)")


def _set_random_seed(seed):
    from deepmammo.caffe.rng import set_random_seed
    set_random_seed(seed)


def _random_stream():
    """Which random stream the nets draw from, for logs and provenance."""
    from deepmammo.caffe.rng import describe
    return describe()


def _progress_bar(total, start, enabled):
    if not enabled or total <= 0:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=f"train from iter {start}", unit="iter", leave=False,
                dynamic_ncols=True)
