# SPDX-License-Identifier: MIT
"""peer_shm.py - the peer mbroker is compared with in `make bench`:
Python's multiprocessing.shared_memory (SharedMemory under a
SharedMemoryManager) doing the same job: a manager holds the model, workers
attach it by name and read every page.  Prints one JSON object: attach
latency, the sum of Pss with the workers attached, and what is left in
/dev/shm after a kill -9 of a worker and of the manager.  Whatever it
leaves is removed before it exits.
    python3 bench/peer_shm.py MODEL_FILE WORKERS ITERATIONS
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from multiprocessing import shared_memory
from multiprocessing.managers import SharedMemoryManager

WORKER = """
import sys
from multiprocessing import shared_memory
s = shared_memory.SharedMemory(name=sys.argv[1])
m = s.buf
total = 0
for off in range(0, len(m), 4096):
    total += m[off]
print("ready", flush=True)
sys.stdin.read()
"""


def pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def left(name):
    return os.path.exists(f"/dev/shm/{name}")


def main():
    path, workers, iterations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    size = os.path.getsize(path)
    smm = SharedMemoryManager()
    smm.start()
    shm = smm.SharedMemory(size)
    with open(path, "rb") as f:
        f.readinto(shm.buf)
    name = shm.name

    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        s = shared_memory.SharedMemory(name=name)
        times.append(time.perf_counter() - t0)
        s.close()
    times.sort()

    procs = [subprocess.Popen([sys.executable, "-c", WORKER, name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(workers)]
    for p in procs:
        p.stdout.readline()
    manager_pid = smm._process.pid
    pss = pss_kb(os.getpid()) + pss_kb(manager_pid) + sum(
        pss_kb(p.pid) for p in procs)

    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    after_worker_kill = left(name)
    os.kill(manager_pid, signal.SIGKILL)
    smm._process.join()
    after_manager_kill = left(name)
    for p in procs[1:]:
        p.stdin.close()
        p.wait()
    shm.close()
    leaked = left(name)
    if leaked:
        shared_memory.SharedMemory(name=name).unlink()
    print(json.dumps({
        "attach_p50_us": round(statistics.median(times) * 1e6, 1),
        "attach_p99_us": round(times[int(0.99 * (len(times) - 1))] * 1e6, 1),
        "pss_sum_kb": pss,
        "left_after_worker_kill": after_worker_kill,
        "left_after_manager_kill": after_manager_kill,
        "left_at_exit": leaked,
    }, separators=(",", ":")))


if __name__ == "__main__":
    main()
