"""Several server processes on one port, each with a listening socket of its own (``SO_REUSEPORT``).

uvicorn's own ``--workers`` binds one socket and shares it: whichever worker's event loop calls ``accept()``
first takes the connection. A load balancer or load generator that opens its connections at once then lands
most of them on one worker: the load harness saw 28 of 32 connections on one of two workers, which saturated
while the other idled (benchmarks/RESULTS.md, session 8). With a socket per worker the kernel spreads new
connections over the sockets by a hash of their addresses, so every worker gets its share.

The supervisor starts ``workers`` processes, restarts one that dies (unless it keeps dying at start-up), and
on SIGINT or SIGTERM asks each to shut down as uvicorn does on its own (finishing requests and the app's
lifespan: the decision log and exposures are flushed) before it exits itself.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn

log = logging.getLogger("arbiter.workers")

SHUTDOWN_GRACE_S = 30.0
"""How long a worker may take to finish its requests and lifespan after SIGTERM before it is killed."""
QUICK_DEATH_S = 5.0
"""A worker that dies sooner than this after starting counts towards giving up (a crash at start-up)."""
MAX_QUICK_DEATHS = 5


def supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other processes may bind too, each getting a share of connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


PR_SET_PDEATHSIG = 1
"""prctl(2): the signal the kernel sends this process when its parent dies."""


def _stop_with(supervisor: int) -> None:
    """Have the kernel send this worker SIGTERM when its supervisor dies, however it dies (``kill -9``, the OOM
    killer). Otherwise the worker lives on as an orphan still listening on the port, and a restarted supervisor's
    workers would share the port with the old code. Linux only; elsewhere nothing is done."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(supervisor: int, host: str, port: int, uvicorn_options: dict[str, Any]) -> None:
    _stop_with(supervisor)
    sock = reuseport_socket(host, port)
    config = uvicorn.Config(**uvicorn_options)
    uvicorn.Server(config).run(sockets=[sock])


def supervise(host: str, port: int, workers: int, uvicorn_options: dict[str, Any]) -> int:
    """Run ``workers`` servers on ``host:port`` until SIGINT/SIGTERM; returns the exit status."""
    # Bind once here first: a port that is taken (or a bad address) fails now, with one message, rather than
    # in every worker. Closed before the workers start so that it never holds a share of the connections.
    reuseport_socket(host, port).close()
    context = multiprocessing.get_context("spawn")  # no forked event loop, Redis connection or Lua runtime
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[BaseProcess, float]:
        process = context.Process(target=_worker, args=(os.getpid(), host, port, uvicorn_options), daemon=False)
        process.start()
        return process, time.monotonic()

    running = [start() for _ in range(workers)]
    quick_deaths, status = 0, 0
    try:
        while not stopping:
            wait([p.sentinel for p, _ in running], timeout=0.5)
            for i, (process, started_s) in enumerate(running):
                if process.is_alive() or stopping:
                    continue
                # Counted while deaths come at start-up one after another; a worker that ran a while resets it.
                quick_deaths = quick_deaths + 1 if time.monotonic() - started_s < QUICK_DEATH_S else 0
                if quick_deaths >= MAX_QUICK_DEATHS:
                    log.error("workers keep dying at start-up (last exit code %s); stopping", process.exitcode)
                    stopping, status = True, 1
                    break
                log.warning("worker %s exited with code %s; starting another", process.pid, process.exitcode)
                running[i] = start()
    finally:
        for process, _ in running:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # uvicorn's graceful shutdown, lifespan included
        deadline_s = time.monotonic() + SHUTDOWN_GRACE_S
        for process, _ in running:
            process.join(max(0.0, deadline_s - time.monotonic()))
            if process.is_alive():
                log.error("worker %s did not stop within %.0f s; killing it", process.pid, SHUTDOWN_GRACE_S)
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
