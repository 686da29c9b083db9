"""Running things as a user runs them: the `deepmammo` command, make and other tools in
subprocesses, with this checkout's package on the path, and the one-line error a failed
command prints. Every test that starts the CLI in a subprocess goes through `run_cli`, `dm`
or `run` (and is marked `subprocess`, see conftest.py)."""
import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)


def env(**extra):
    """The environment of a shell where `source .venv/bin/activate` was run, plus `extra`."""
    out = dict(os.environ)
    out["PATH"] = VENV_BIN + os.pathsep + out.get("PATH", "")
    # this checkout's package, whichever checkout the venv was installed from
    out["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, out.get("PYTHONPATH")) if p)
    out.pop("MAKEFLAGS", None)
    out.pop("MAKELEVEL", None)
    out.update(extra)
    return out


def run(args, cwd, timeout=600, check=True, **kwargs):
    """Run a command as a user would; on failure the assertion shows what it printed."""
    proc = subprocess.run(args, cwd=cwd, env=kwargs.pop("env", None) or env(),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)
    if check:
        assert proc.returncode == 0, (f"{args} exited {proc.returncode}\nstdout:\n"
                                      f"{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def run_cli(*args, cwd=None, timeout=300, env=None):
    """`deepmammo ARGS` (as `python -m deepmammo`) in `cwd`; the finished process, whatever
    its exit status (tests of failures read `.returncode` and `.stderr`)."""
    return run([sys.executable, "-m", "deepmammo", *map(str, args)], cwd, timeout=timeout,
               check=False, env=env)


def dm(*args, cwd, **kwargs):
    """`deepmammo ARGS`, which must succeed (check=False to read a failure)."""
    return run([sys.executable, "-m", "deepmammo", *map(str, args)], cwd, **kwargs)


def error_line(command, rc, err, *needles):
    """The one line a failed `deepmammo COMMAND` printed (exit status 2, no traceback);
    checks that it names every needle."""
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"deepmammo {command}:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def load_script(name):
    """The module scripts/NAME.py, imported from its file (what a script shares with a test)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(ROOT, "scripts", name + ".py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
