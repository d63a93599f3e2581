"""Fake LSF and HTCondor commands for the launcher tests (neither scheduler can be installed here).

They run each job at once, detached, on this machine, and keep their state in ``$FAKE_BATCH_DIR``
(one ``<id>.*`` file set per job).  They print what the real commands print, as far as the
launchers read it:

* LSF: ``bsub < script`` -> ``Job <ID> is submitted to queue <normal>.``; ``bjobs ID`` -> a table
  with a STAT column (PEND, RUN, DONE, EXIT); ``bkill [-s SIG] ID``.  A job submitted to queue
  ``hold`` (``#BSUB -q hold``) stays PEND until killed.
* HTCondor: ``condor_submit FILE`` (``executable``, ``arguments``, ``environment``, ``output``,
  ``hold``) -> ``1 job(s) submitted to cluster ID.``; ``condor_q ID -af JobStatus ExitCode`` while
  queued or running; ``condor_history ID -af ...`` once done; ``condor_rm [-forcex] ID``.

Usage: ``fakebatch.py COMMAND ARGS...`` (the shell wrappers beside this file do that).
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_BATCH_DIR") or f"/tmp/ipcluster-fakebatch-{os.getuid()}")


def new_id() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "seq", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = int(f.read().strip() or 0) + 1
        f.seek(0)
        f.truncate()
        f.write(str(n))
    return n


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def job_state(job: str) -> tuple[str, int | None]:
    """("pending" | "running" | "done", exit code)."""
    rc_file, pid_file = STATE / f"{job}.rc", STATE / f"{job}.pid"
    if rc_file.exists():
        return "done", int(rc_file.read_text().strip() or 1)
    if (STATE / f"{job}.hold").exists():
        return "pending", None
    if pid_file.exists() and alive(int(pid_file.read_text())):
        return "running", None
    if pid_file.exists():
        return "done", None  # the runner vanished without a word
    return "pending", None  # submitted; the runner has not written its pid yet


def known(job: str) -> bool:
    return (STATE / f"{job}.job").exists()


def start(job: str, argv: list[str], env: dict[str, str], output: str, hold: bool) -> None:
    (STATE / f"{job}.cmd").write_text(shlex.join(argv))
    if hold:
        (STATE / f"{job}.hold").write_text("")
        return
    out = open(output or STATE / f"{job}.out", "ab")
    subprocess.Popen([sys.executable, __file__, "_run", job], stdin=subprocess.DEVNULL, stdout=out,
                     stderr=out, env=env, start_new_session=True, close_fds=True)


def run(job: str) -> int:
    """The detached runner: run the job, record its exit code (128+N when killed by signal N)."""
    (STATE / f"{job}.pid").write_text(str(os.getpid()))
    argv = shlex.split((STATE / f"{job}.cmd").read_text())
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda s, f: received.append(s))
    child = subprocess.Popen(argv)
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover
            continue
    (STATE / f"{job}.rc").write_text(str(128 - code if code < 0 else code))
    return 0


def kill(job: str, signum: int) -> None:
    hold = STATE / f"{job}.hold"
    if hold.exists():
        hold.unlink()
        (STATE / f"{job}.rc").write_text(str(128 + signum))
        return
    pid = int((STATE / f"{job}.pid").read_text()) if (STATE / f"{job}.pid").exists() else 0
    if pid and alive(pid):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass


# --- LSF -----------------------------------------------------------------------------------------


def bsub(args: list[str]) -> int:
    script = Path(args[-1]).read_text() if args and Path(args[-1]).is_file() else sys.stdin.read()
    directives = dict(re.findall(r"^#BSUB\s+(-\w+)\s+(.*?)\s*$", script, flags=re.M))
    job = str(new_id())
    path = STATE / f"{job}.job"
    path.write_text(script)
    queue = directives.get("-q", "normal")
    output = directives.get("-o", "").replace("%J", job)
    env = dict(os.environ, LSB_JOBID=job, LSB_QUEUE=queue)
    start(job, ["/bin/bash", str(path)], env, output, hold=queue == "hold")
    print(f"Job <{job}> is submitted to queue <{queue}>.")
    return 0


def bjobs(args: list[str]) -> int:
    ids = _job_ids(args)
    rows = []
    for job in ids:
        if not known(job):
            print(f"Job <{job}> is not found", file=sys.stderr)
            continue
        state, code = job_state(job)
        stat = {"pending": "PEND", "running": "RUN"}.get(state) or ("DONE" if code == 0 else "EXIT")
        rows.append(f"{job:<8}{os.environ.get('USER', 'root'):<8}{stat:<6}normal     localhost   localhost   job{job}")
    if not rows:
        return 255
    print("JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME")
    print("\n".join(rows))
    return 0


def bkill(args: list[str]) -> int:
    signum = signal.SIGKILL if "KILL" in args else signal.SIGTERM
    if "-s" in args:
        signum = signal.Signals["SIG" + args[args.index("-s") + 1].removeprefix("SIG")]
    rc = 0
    for job in _job_ids(args):
        if not known(job) or job_state(job)[0] == "done":
            print(f"Job <{job}>: Job has already finished", file=sys.stderr)
            rc = 255
            continue
        kill(job, signum)
        print(f"Job <{job}> is being {'signaled' if signum not in (signal.SIGTERM, signal.SIGKILL) else 'terminated'}")
    return rc


# --- HTCondor ------------------------------------------------------------------------------------


def condor_split(text: str) -> list[str]:
    """Submit-description "new syntax" arguments: '"a 'b c' ''q''"' -> ['a', 'b c', "'q'"]."""
    text = text.strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('""', '"')
    args, cur, quoted, i, have = [], [], False, 0, False
    while i < len(text):
        c = text[i]
        if c == "'":
            if quoted and text[i + 1:i + 2] == "'":
                cur.append("'")
                i += 2
                continue
            quoted, have = not quoted, True
        elif c.isspace() and not quoted:
            if cur or have:
                args.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(c)
        i += 1
    if cur or have:
        args.append("".join(cur))
    return args


def condor_submit(args: list[str]) -> int:
    desc = Path(args[-1]).read_text()
    fields = {k.lower(): v for k, v in re.findall(r"^\s*(\w+)\s*=\s*(.*?)\s*$", desc, flags=re.M)}
    if "executable" not in fields:
        print("ERROR: No 'executable' parameter was provided", file=sys.stderr)
        return 1
    job = str(new_id())
    (STATE / f"{job}.job").write_text(desc)
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in condor_split(fields.get("environment", "")) if "=" in kv)
    argv = [fields["executable"], *condor_split(fields.get("arguments", ""))]
    start(job, argv, env, fields.get("output", ""), hold=fields.get("hold", "").lower() == "true")
    print(f"Submitting job(s).\n1 job(s) submitted to cluster {job}.")
    return 0


def _condor_status(job: str) -> tuple[str, str]:
    state, code = job_state(job)
    if (STATE / f"{job}.removed").exists():
        return "3", "undefined"
    if state == "pending":
        return ("5" if (STATE / f"{job}.hold").exists() else "1"), "undefined"
    if state == "running":
        return "2", "undefined"
    return "4", str(code) if code is not None else "undefined"


def condor_q(args: list[str]) -> int:
    for job in _job_ids(args):
        if known(job):
            status, code = _condor_status(job)
            if status in ("1", "2", "5"):
                print(f"{status} {code}")
    return 0


def _job_ids(args: list[str]) -> list[str]:
    """The job ids among *args* (option values such as ``-limit 1`` excluded)."""
    ids, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-limit", "-af", "-s"):
            skip = a != "-af"
        elif a.isdigit():
            ids.append(a)
    return ids


def condor_history(args: list[str]) -> int:
    for job in _job_ids(args):
        if known(job):
            status, code = _condor_status(job)
            if status in ("3", "4"):
                print(f"{status} {code}")
    return 0


def condor_rm(args: list[str]) -> int:
    signum = signal.SIGKILL if "-forcex" in args else signal.SIGTERM
    rc = 0
    for job in _job_ids(args):
        if not known(job) or _condor_status(job)[0] in ("3", "4"):
            print(f"Couldn't find/remove all jobs in cluster {job}", file=sys.stderr)
            rc = 1
            continue
        (STATE / f"{job}.removed").write_text("")
        kill(job, signum)
        print(f"All jobs in cluster {job} have been marked for removal")
    return rc


COMMANDS = {"bsub": bsub, "bjobs": bjobs, "bkill": bkill, "condor_submit": condor_submit,
            "condor_q": condor_q, "condor_history": condor_history, "condor_rm": condor_rm}


def main(argv: list[str]) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    if argv[0] == "_run":
        return run(argv[1])
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
