"""Hosts made of Linux namespaces: each one a network namespace with its own address on a private
bridge, its own hostname, and its processes in a cgroup (v1) with a CPU quota, as a dyno or a
pod would have. Needs root, ``ip`` (iproute2) and the cgroup v1 ``cpu`` and ``cpuacct``
controllers (mounted apart here, so each host has a group in both: the quota, the time used).

Everything is named with ``PREFIX`` so that ``Network.sweep`` can remove what a run killed
before its cleanup left behind; ``network_lock`` keeps two rigs on one machine from meeting.
Traffic stays on the bridge: the namespaces have no route anywhere else.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PREFIX = "tcl"  # namespaces tcl-<host>, bridge tcl-br, veths tcl<n>, cgroups cpu/tcl/<host>
BRIDGE = f"{PREFIX}-br"
SUBNET = "10.77.0"  # a /24 of our own; the root namespace (the test, "Tavus") is .1
CGROUP_ROOT = Path("/sys/fs/cgroup/cpu") / PREFIX  # the quota
ACCOUNTING_ROOT = Path("/sys/fs/cgroup/cpuacct") / PREFIX  # the CPU time used (its own hierarchy)
CFS_PERIOD_US = 100_000
LOCK_FILE = Path("/run/tavus-cluster.lock")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def available() -> str | None:
    """Why the rig cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, cgroups)"
    if not (CGROUP_ROOT.parent / "cpu.cfs_quota_us").exists():
        return "needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
    if not (ACCOUNTING_ROOT.parent / "cpuacct.usage").exists():
        return "needs the cgroup v1 cpuacct controller at /sys/fs/cgroup/cpuacct"
    if shutil.which("haproxy") is None:
        return "needs haproxy (Debian's package; scripts/test installs it)"
    try:
        ip("netns", "list")
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"needs iproute2 with network namespaces: {exc}"
    return None


@contextlib.contextmanager
def network_lock() -> Iterator[None]:
    """One rig per machine at a time: they would share the bridge's address range."""
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Host:
    """One machine: ``<SUBNET>.<octet>`` on the bridge, its processes under one CPU quota."""

    def __init__(self, name: str, octet: int, cpus: float | None) -> None:
        self.name = name
        self.address = f"{SUBNET}.{octet}"
        self.namespace = f"{PREFIX}-{name}"
        self.veth = f"{PREFIX}{octet}"  # the bridge's end; the namespace's end is eth0
        self.cpus = cpus
        self.cgroup = CGROUP_ROOT / name
        self.accounting = ACCOUNTING_ROOT / name
        self.processes: list[subprocess.Popen[bytes]] = []

    def create(self) -> None:
        ip("netns", "add", self.namespace)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", f"{self.veth}n")
        ip("link", "set", f"{self.veth}n", "netns", self.namespace, "name", "eth0")
        ip("link", "set", self.veth, "master", BRIDGE, "up")
        inside = ("-n", self.namespace)
        ip(*inside, "addr", "add", f"{self.address}/24", "dev", "eth0")
        ip(*inside, "link", "set", "eth0", "up")
        ip(*inside, "link", "set", "lo", "up")
        self.cgroup.mkdir(parents=True, exist_ok=True)
        self.accounting.mkdir(parents=True, exist_ok=True)
        quota = -1 if self.cpus is None else int(self.cpus * CFS_PERIOD_US)
        (self.cgroup / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (self.cgroup / "cpu.cfs_quota_us").write_text(str(quota))

    def run(
        self, command: list[str], env: dict[str, str], log: IO[bytes], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` on this host: in its namespaces and its cgroup, in a session of its
        own (a signal to the group reaches its children, as on a dyno)."""
        # The shell joins the cgroups and becomes the command (exec keeps its pid), so all it
        # starts inherits them; ``ip netns exec`` mounts a sysfs of its own, hence before it.
        join = 'echo $$ > "$0" && echo $$ > "$1" && shift && exec "$@"'
        on_host = [
            "sh", "-c", join, str(self.cgroup / "cgroup.procs"),
            str(self.accounting / "cgroup.procs"),
            "ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', self.name,
            *command,
        ]  # fmt: skip
        process = subprocess.Popen(
            on_host, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        try:
            return [int(pid) for pid in (self.cgroup / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def cpu_seconds(self) -> float:
        """CPU time the host's processes have used so far (user and system)."""
        return int((self.accounting / "cpuacct.usage").read_text()) / 1e9

    def kill_all(self) -> None:
        """SIGKILL every process of the host, as a machine that loses power; reaped."""
        deadline = time.monotonic() + 10
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.processes.clear()

    def link(self, up: bool) -> None:
        """Plug or unplug the host's cable: while down, its packets go nowhere (no refusal)."""
        ip("link", "set", self.veth, "up" if up else "down")

    def destroy(self) -> None:
        self.kill_all()
        ip("link", "del", self.veth, check=False)
        ip("netns", "del", self.namespace, check=False)
        for group in (self.cgroup, self.accounting):
            with contextlib.suppress(FileNotFoundError):
                group.rmdir()


class Network:
    """The bridge and the hosts on it; ``close`` removes all of it, whatever state it is in."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}

    def open(self) -> Network:
        self.sweep()
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        CGROUP_ROOT.mkdir(exist_ok=True)
        ACCOUNTING_ROOT.mkdir(exist_ok=True)
        return self

    def add(self, name: str, octet: int, cpus: float | None) -> Host:
        host = Host(name, octet, cpus)
        self.hosts[name] = host
        host.create()
        return host

    def close(self) -> None:
        for host in reversed(list(self.hosts.values())):
            host.destroy()
        self.hosts.clear()
        self.sweep()

    @staticmethod
    def sweep() -> None:
        """Remove every namespace, link and cgroup of ours: what a killed run left behind."""
        if CGROUP_ROOT.exists():
            for group in [p for p in CGROUP_ROOT.iterdir() if p.is_dir()]:
                Host(group.name, 0, None).kill_all()
                group.rmdir()
        if ACCOUNTING_ROOT.exists():
            for group in [p for p in ACCOUNTING_ROOT.iterdir() if p.is_dir()]:
                group.rmdir()  # its processes were in the quota's group too: gone by now
            ACCOUNTING_ROOT.rmdir()
        for line in ip("netns", "list").stdout.splitlines():
            name = line.split()[0]
            if name.startswith(f"{PREFIX}-"):
                ip("netns", "del", name, check=False)
        for line in ip("-o", "link", "show").stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(PREFIX):
                ip("link", "del", name, check=False)
        if CGROUP_ROOT.exists():
            CGROUP_ROOT.rmdir()
