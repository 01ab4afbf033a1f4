"""Cold start and idle memory of ``graphserve deploy`` on the local runtime.

Cold start: from launching ``graphserve deploy bench.workloads:w1 --port N`` to the
first 200 answer to ``POST /w1`` (polled every 5 ms), best and median of a few runs.
Idle memory: after the first answer and a short idle pause, the RSS and PSS of the
whole process tree (the server and any children), summed from
``/proc/<pid>/smaps_rollup``; whether torch was loaded is read from ``/proc/<pid>/maps``.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

from . import costs
from .servers import ROOT, bench_env, free_port, post


def deploy_command(target: str, port: int) -> list[str]:
    exe = Path(sys.executable).parent / "graphserve"
    if exe.exists():
        return [str(exe), "deploy", target, "--port", str(port)]
    found = shutil.which("graphserve")
    if found:
        return [found, "deploy", target, "--port", str(port)]
    return [sys.executable, "-m", "graphserve", "deploy", target, "--port", str(port)]


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def memory_kb(pid: int) -> dict[str, int]:
    """Rss and Pss (kB) of one process from its smaps_rollup."""
    out = {"Rss": 0, "Pss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def tree_memory_mb(pid: int) -> dict[str, float]:
    pids = process_tree(pid)
    rss = pss = 0
    for p in pids:
        m = memory_kb(p)
        rss += m["Rss"]
        pss += m["Pss"]
    return {"processes": len(pids), "rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1)}


def loads_torch(pid: int) -> bool:
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/maps") as f:
                if "libtorch" in f.read():
                    return True
        except OSError:
            continue
    return False


def one_start(target: str = "bench.workloads:w1", path: str = "/w1", timeout_s: float = 60.0, idle_s: float = 1.0):
    port = free_port()
    cmd = deploy_command(target, port)
    url = f"http://127.0.0.1:{port}{path}"
    t0 = time.perf_counter()
    process = subprocess.Popen(
        cmd, cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        ready_s = None
        while time.perf_counter() - t0 < timeout_s:
            if process.poll() is not None:
                out = process.stdout.read().decode(errors="replace") if process.stdout else ""
                raise RuntimeError(f"{' '.join(cmd)} exited with {process.returncode}:\n{out[-2000:]}")
            try:
                status, _ = post(url, costs.BODY, timeout=5)
            except (urllib.error.URLError, OSError):
                status = 0
            if status == 200:
                ready_s = time.perf_counter() - t0
                break
            time.sleep(0.005)
        if ready_s is None:
            raise RuntimeError(f"{' '.join(cmd)} did not answer 200 within {timeout_s:g}s")
        time.sleep(idle_s)
        return {"ready_s": round(ready_s, 3), **tree_memory_mb(process.pid), "torch_loaded": loads_torch(process.pid)}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def import_seconds(module: str = "graphserve.runtime", runs: int = 5) -> float:
    """Median wall time of ``import module`` in a fresh interpreter (the interpreter's own
    start not counted: measured inside it)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    ]
    return round(statistics.median(times), 4)


def compile_bytecode() -> None:
    """Compile the project's modules to bytecode first, as ``pip install`` does for an installed
    package: an editable checkout run with PYTHONDONTWRITEBYTECODE (as these machines set it)
    would otherwise compile every module from source at each start."""
    folders = [str(ROOT / name) for name in ("graphserve", "compiler", "runtime", "bench")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], check=True, capture_output=True)


def measure(runs: int = 3, idle_s: float = 1.0) -> dict:
    compile_bytecode()
    results = [one_start(idle_s=idle_s) for _ in range(runs)]
    ready = [r["ready_s"] for r in results]
    return {
        "bytecode_compiled": True,
        "import_runtime_s": import_seconds("graphserve.runtime"),
        "import_ray_actor_s": import_seconds("graphserve.runtime.ray_actor"),
        "command": " ".join([*deploy_command("bench.workloads:w1", 0)[:-2], "--port", "N"]),
        "runs": results,
        "ready_s_best": min(ready),
        "ready_s_median": round(statistics.median(ready), 3),
        "idle_rss_mb": max(r["rss_mb"] for r in results),
        "idle_pss_mb": max(r["pss_mb"] for r in results),
        "torch_loaded": any(r["torch_loaded"] for r in results),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
