"""The child's process tree: who belongs to it (even after escaping the group), its size.

Every descendant seen while the child runs is remembered, so one that called setsid() and
whose parent then exited (reparented to init) is still known when the job is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal

import psutil


class ProcessTree:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pgid = pid
        # Made on first sample, not at spawn: most short children are never sampled at all.
        self._root: psutil.Process | None = None
        self._exited = False
        self.known: dict[int, psutil.Process] = {}
        self.peak_rss_bytes = 0
        self.cpu_s = 0.0
        self.samples = 0

    def sample(self) -> None:
        """Refresh the descendant set; add up RSS and CPU of every live process in it.

        Only call while the root has not been reaped (its pid cannot be reused yet).
        """
        if self._exited:
            return
        if self._root is None:
            try:
                self._root = psutil.Process(self.pid)
            except psutil.Error:
                return
        self.samples += 1
        procs: list[psutil.Process] = []
        try:
            procs.append(self._root)
            for child in self._root.children(recursive=True):
                self.known.setdefault(child.pid, child)
        except psutil.Error:
            pass
        procs.extend(p for pid, p in self.known.items() if pid != self.pid)
        rss = 0
        cpu = 0.0
        for proc in procs:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    t = proc.cpu_times()
                    cpu += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                continue
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        self.cpu_s = max(self.cpu_s, cpu)

    def root_exited(self) -> None:
        """The root was reaped: its pid may be reused, never touch it again."""
        self._root = None
        self._exited = True

    def signal_all(self, sig: int) -> int:
        """Signal the process group and every known descendant still alive (escaped ones)."""
        sent = 0
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
            sent += 1
        for proc in list(self.known.values()):
            try:
                if proc.is_running():  # checks the start time: a reused pid is not ours
                    proc.send_signal(sig)
                    sent += 1
            except psutil.Error:
                continue
        return sent

    def survivors(self) -> list[psutil.Process]:
        """Known descendants still running (zombies waiting for their parent excluded)."""
        alive: list[psutil.Process] = []
        for proc in self.known.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                continue
        return alive

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def kill_strays(self) -> int:
        """After the root exited: SIGKILL whatever of the job is left; how many were found."""
        strays = len(self.survivors())
        group = self.group_alive()
        if strays or group:
            self.signal_all(signal.SIGKILL)
        return strays
