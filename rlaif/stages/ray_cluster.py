"""The Ray cluster a Ray run judges on: joined or started, the judge actors fitted to it, a run that makes no
progress stopped, and no local Ray left behind.

- connect: an address (`auto`, `ray://...`) or RAY_ADDRESS is joined and never stopped by rlaif; without one, a
  local Ray of this command's own is started (`address="local"`, so a Ray something else left running is not
  joined by accident) with the machine's CPUs and at least one more than the actors (each actor holds a CPU for
  the whole run, and the tasks that read the pairs and write the judgments need one), and its owner is written
  into its session folder (`rlaif-owner.json`). It is stopped when the command ends; if the command was killed
  (kill -9) and could not stop it, the next Ray run of rlaif on this machine finds it by that file (its owner
  process gone, its processes still up), stops it and says so.
- fit_actors: on a cluster rlaif did not size, the actors asked are cut to what its CPUs (and GPUs) can hold with
  one CPU left for reading; a cluster that cannot hold one actor is refused, naming what it has.
- Watchdog: while the cluster works, a line every `every` seconds says how many judgment files came back; when
  none came back for `stall_s` seconds, the run is stopped with an error that names the cluster's resources.
"""

from __future__ import annotations

import _thread
import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from rlaif.errors import BackendError, ConfigError

__all__ = ["connect", "local_cpus", "fit_actors", "stop_stale_local_rays", "forget_owner", "watchdog", "RayStalled",
           "OWNER_FILE"]

OWNER_FILE = "rlaif-owner.json"
"""In a local Ray's session folder: the rlaif process that started it (pid and start time)."""


class RayStalled(BackendError):
    """No judgment came back from the Ray cluster for longer than the stall timeout."""


def _say(message: str) -> None:
    print(f"ray: {message}", file=sys.stderr, flush=True)


def local_cpus(actors: int) -> int:
    """CPUs of a local Ray rlaif starts: the machine's, and at least one more than the actors."""
    return max(os.cpu_count() or 1, actors + 1)


def ray_temp_root(init_args: dict[str, Any] | None = None) -> Path:
    """Where local Rays keep their session folders (Ray's own rule: RAY_TMPDIR, TMPDIR, /tmp; or `_temp_dir`)."""
    given = (init_args or {}).get("_temp_dir")
    if given:
        return Path(given)
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(base) / "ray"


def connect(address: str | None, init_args: dict[str, Any] | None, actors: int) -> tuple[bool, bool]:
    """Join or start Ray: (this call initialised Ray in this process, this call started a local Ray)."""
    import ray

    if ray.is_initialized():
        return False, False
    args = {"include_dashboard": False, "log_to_driver": False, **(init_args or {})}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, **args)
        return True, False
    for line in stop_stale_local_rays(ray_temp_root(init_args)):
        _say(line)
    args.setdefault("num_cpus", local_cpus(actors))
    ray.init(address="local", **args)
    _write_owner()
    return True, True


def _session_dir() -> Path | None:
    import ray

    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    try:
        return Path(node.get_session_dir_path()) if node is not None else None
    except (AttributeError, OSError):
        return None


def _write_owner() -> None:
    import psutil

    folder = _session_dir()
    if folder is not None and folder.is_dir():
        me = psutil.Process()
        (folder / OWNER_FILE).write_text(json.dumps({"pid": me.pid, "create_time": me.create_time(),
                                                     "command": " ".join(sys.argv)[:500]}))


def forget_owner() -> None:
    """After a clean stop of the local Ray: its session folder no longer names an owner."""
    folder = _session_dir()
    if folder is not None:
        (folder / OWNER_FILE).unlink(missing_ok=True)


def _alive(owner: dict[str, Any]) -> bool:
    import psutil

    try:
        return abs(psutil.Process(int(owner["pid"])).create_time() - float(owner["create_time"])) < 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _of_session(proc: Any, session: str) -> bool:
    """Whether a process belongs to a local Ray session: its command line names the session folder (the head
    processes), or it holds a log file there (the raylet's agents, whose command line Ray rewrites)."""
    import psutil

    try:
        return session in " ".join(proc.info["cmdline"] or []) or any(f.path.startswith(session) for f in proc.open_files())
    except psutil.Error:
        return False


def _session_processes(session: Path) -> list[Any]:
    """The processes of a local Ray session, with all their children."""
    import psutil

    found: dict[int, Any] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid != os.getpid() and _of_session(proc, str(session) + os.sep):
            found[proc.pid] = proc
            try:
                found.update({child.pid: child for child in proc.children(recursive=True)})
            except psutil.Error:
                pass
    return list(found.values())


def stop_stale_local_rays(root: Path) -> list[str]:
    """Stop every local Ray under `root` that an rlaif process started and left running when it died; one line
    per Ray stopped. A Ray whose owner still runs is left alone."""
    import psutil

    said = []
    for owner_file in sorted(root.glob(f"session_*/{OWNER_FILE}")):
        if owner_file.parent.is_symlink():  # session_latest: the same session again
            continue
        try:
            owner = json.loads(owner_file.read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        procs = _session_processes(owner_file.parent)
        for proc in procs:
            with suppress(psutil.Error):
                proc.terminate()
        _, left = psutil.wait_procs(procs, timeout=5)
        for proc in left:
            with suppress(psutil.Error):
                proc.kill()
        owner_file.unlink(missing_ok=True)
        if procs:
            said.append(f"stopped a local Ray left running by an earlier rlaif (pid {owner.get('pid')}, killed before it "
                        f"could stop it): {len(procs)} processes of {owner_file.parent.name}")
    return said


def _resources() -> tuple[float, float]:
    import ray

    total = ray.cluster_resources()
    return float(total.get("CPU", 0)), float(total.get("GPU", 0))


def fit_actors(actors: int, gpus_per_actor: float) -> int:
    """The actors this cluster can hold at once (each takes a CPU, and `gpus_per_actor` GPUs; one CPU is kept
    for the read and write tasks): `actors` when they fit, fewer (said on stderr) when not; a ConfigError when
    not even one fits."""
    cpus, gpus = _resources()
    fit = int(cpus - 1)
    room = f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs"
    if gpus_per_actor:
        fit = min(fit, math.floor(gpus / gpus_per_actor + 1e-9))
    if fit < 1:
        need = f"2 CPUs{f' and {gpus_per_actor:g} GPUs' if gpus_per_actor else ''}"
        raise ConfigError(f"{room}: one judge actor holds a CPU{' and its GPUs' if gpus_per_actor else ''} and reading "
                          f"the pairs needs another CPU, so nothing could run (the run would wait forever); give Ray at "
                          f"least {need} (`ray status` shows what it has)")
    if actors > fit:
        _say(f"{actors} judge actors asked, but {room}: running {fit} (each actor holds a CPU"
             f"{f' and {gpus_per_actor:g} GPUs' if gpus_per_actor else ''}, and one CPU is kept to read the pairs)")
        return fit
    return actors


def _files(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.parquet")) if folder.is_dir() else 0


def _needs(actors: int, gpus_per_actor: float) -> str:
    cpus, gpus = _resources()
    each = f"a CPU and {gpus_per_actor:g} GPUs" if gpus_per_actor else "a CPU"
    return f"{actors} judge actors each need {each}; the cluster has {cpus:g} CPUs and {gpus:g} GPUs"


@contextmanager
def watchdog(folder: Path, stall_s: float, actors: int, gpus_per_actor: float, progress: bool = True,
             every: float = 30.0) -> Iterator[None]:
    """While the block runs: a progress line every `every` seconds (with `progress`), and the block stopped with
    RayStalled (naming what the actors need and what the cluster has) when no new judgment file came to `folder`
    for `stall_s` seconds."""
    done, stalled = threading.Event(), threading.Event()
    began = time.monotonic()

    def watch() -> None:
        seen, last, said = 0, time.monotonic(), time.monotonic()
        while not done.wait(min(1.0, every)):
            now, files = time.monotonic(), _files(folder)
            if files > seen:
                seen, last = files, now
            if progress and now - said >= every:
                said = now
                _say(f"{seen} judgment files back after {now - began:.0f} s" + ("" if seen else " (the judge actors "
                     "are starting, or waiting for the cluster's CPUs/GPUs)"))
            if now - last >= stall_s and not done.is_set():
                stalled.set()
                _thread.interrupt_main()
                return

    thread = threading.Thread(target=watch, name="rlaif-ray-watchdog", daemon=True)
    thread.start()
    try:
        yield
    except KeyboardInterrupt:
        if stalled.is_set():
            raise RayStalled(f"no judgment came back from Ray for {stall_s:.0f} s (--ray-stall-timeout): "
                             f"{_needs(actors, gpus_per_actor)}; see `ray status` and the run folder's rlaif.log; "
                             "rerunning resumes (what finished is kept)") from None
        raise
    finally:
        done.set()
        thread.join()
