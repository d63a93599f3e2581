"""Job states as the launchers report them, and the pure parsers that turn scheduler output
(``scontrol``/``sacct``, ``qstat``/``qacct``, ``bjobs``, ``condor_q``/``condor_history``) into them.

Each parser takes the text a status command printed and returns a :class:`JobStatus`, or
``None`` when the text does not mention the job (then the launcher asks the next source, and in
the end counts the job as :attr:`JobState.GONE`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class JobState(str, enum.Enum):
    """Where a batch job is in its life."""

    QUEUED = "queued"  # submitted, waiting for resources (or held)
    RUNNING = "running"
    FINISHED = "finished"  # ended with exit code 0
    FAILED = "failed"  # ended otherwise: non-zero exit, cancelled, wall time, node failure...
    GONE = "gone"  # the scheduler no longer knows it: ended, exit code unknown

    @property
    def ended(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.GONE)


@dataclass(frozen=True)
class JobStatus:
    """A job's state, its exit code once known (negative: killed by that signal), and why."""

    state: JobState
    exit_code: int | None = None
    reason: str = ""

    def describe(self) -> str:
        text = self.state.value
        details = [d for d in (self.reason, None if self.exit_code is None else f"exit code {self.exit_code}") if d]
        return f"{text} ({', '.join(details)})" if details else text


def _ended(exit_code: int | None, reason: str = "") -> JobStatus:
    ok = exit_code == 0 and not reason
    return JobStatus(JobState.FINISHED if ok else JobState.FAILED, exit_code, reason)


# --- Slurm ---------------------------------------------------------------------------------------

_SLURM_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
                 "SUSPENDED", "STOPPED", "SPECIAL_EXIT", "RESV_DEL_HOLD"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
_SLURM_FAILED_REASONS = {
    "TIMEOUT": "wall time reached",
    "CANCELLED": "cancelled",
    "NODE_FAIL": "node failure",
    "OUT_OF_MEMORY": "out of memory",
    "BOOT_FAIL": "node boot failure",
    "DEADLINE": "deadline reached",
    "PREEMPTED": "preempted",
    "REVOKED": "revoked",
}


def slurm_exit_code(text: str) -> int | None:
    """Slurm's ``"EXIT:SIGNAL"`` as one number: the exit code, or minus the signal."""
    m = re.fullmatch(r"\s*(\d+):(\d+)\s*", text)
    if not m:
        return None
    code, sig = int(m.group(1)), int(m.group(2))
    return -sig if sig else code


def slurm_status(state: str, exit_code: str = "", reason: str = "") -> JobStatus:
    """A status from Slurm's JobState (``"CANCELLED by 0"`` counts as ``CANCELLED``)."""
    word = state.split()[0].rstrip("+") if state.split() else ""
    if word in _SLURM_QUEUED:
        return JobStatus(JobState.QUEUED, reason="" if reason in ("", "None") else reason)
    if word in _SLURM_RUNNING:
        return JobStatus(JobState.RUNNING)
    code = slurm_exit_code(exit_code)
    if word == "COMPLETED":
        return _ended(code if code is not None else 0)
    if word == "FAILED":
        return JobStatus(JobState.FAILED, code, "" if reason in ("", "None") else reason)
    if word in _SLURM_FAILED_REASONS:
        return JobStatus(JobState.FAILED, code, _SLURM_FAILED_REASONS[word])
    return JobStatus(JobState.RUNNING if word else JobState.GONE, code, f"Slurm state {state!r}" if word else "")


def parse_scontrol_job(text: str, job_id: str) -> JobStatus | None:
    """``scontrol show job -o ID`` (one line of ``Key=Value`` pairs)."""
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobId") == job_id or fields.get("ArrayJobId") == job_id:
            return slurm_status(fields.get("JobState", ""), fields.get("ExitCode", ""), fields.get("Reason", ""))
    return None


def parse_sacct(text: str, job_id: str) -> JobStatus | None:
    """``sacct -n -X -P -o JobID,State,ExitCode -j ID``."""
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and parts[0] == job_id:
            return slurm_status(parts[1], parts[2])
    return None


# --- Grid Engine ---------------------------------------------------------------------------------


def parse_sge_qstat(text: str, job_id: str) -> JobStatus | None:
    """Plain ``qstat`` (a table; an array job has one line per task or task range)."""
    states = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] == job_id:
            states.append(parts[4])
    if not states:
        return None
    if any("E" in s for s in states):
        return JobStatus(JobState.FAILED, None, "error state (qstat -j shows why)")
    if any(set(s) & set("rtRsSTd") for s in states):
        return JobStatus(JobState.RUNNING)
    return JobStatus(JobState.QUEUED, reason="held" if any("h" in s for s in states) else "")


def parse_sge_qacct(text: str, job_id: str) -> JobStatus | None:
    """``qacct -j ID`` (one block per task; the worst task decides)."""
    blocks = re.split(r"^=+\s*$", text, flags=re.M)
    codes, failures = [], []
    for block in blocks:
        fields = dict(re.findall(r"^(\w+)\s+(.*?)\s*$", block, flags=re.M))
        if fields.get("jobnumber") != job_id:
            continue
        if fields.get("exit_status", "").split()[:1]:
            codes.append(int(fields["exit_status"].split()[0]))
        failed = fields.get("failed", "0")
        if not failed.startswith("0"):
            failures.append(failed)
    if not codes and not failures:
        return None
    worst = max(codes, key=abs) if codes else None
    return _ended(worst, f"failed: {failures[0]}" if failures else "")


# --- PBS / Torque --------------------------------------------------------------------------------

_PBS_STATES = {"Q": JobState.QUEUED, "H": JobState.QUEUED, "W": JobState.QUEUED, "T": JobState.QUEUED,
               "S": JobState.QUEUED, "R": JobState.RUNNING, "E": JobState.RUNNING, "B": JobState.RUNNING}


def _pbs_id_matches(listed: str, job_id: str) -> bool:
    # "123.server" and "123" name the same job; so does an array "123[]"
    return listed.split(".")[0].rstrip("[]") == job_id.split(".")[0].rstrip("[]")


def parse_pbs_qstat_f(text: str, job_id: str) -> JobStatus | None:
    """``qstat -f ID`` (``Job Id: ...`` then ``key = value`` lines)."""
    current: dict[str, str] | None = None
    found: dict[str, str] | None = None
    for line in text.splitlines():
        m = re.match(r"\s*Job Id:\s*(\S+)", line)
        if m:
            current = {} if _pbs_id_matches(m.group(1), job_id) else None
            if current is not None:
                found = current
            continue
        if current is not None:
            kv = re.match(r"\s*([\w.]+)\s*=\s*(.*?)\s*$", line)
            if kv:
                current[kv.group(1)] = kv.group(2)
    if found is None:
        return None
    letter = found.get("job_state", "")[:1]
    if letter in ("C", "F", "X"):
        code = found.get("exit_status") or found.get("Exit_status")
        try:
            num: int | None = int(code) if code is not None else None
        except ValueError:
            num = None
        return _ended(num) if num is not None else JobStatus(JobState.GONE, None, "completed")
    return JobStatus(_PBS_STATES.get(letter, JobState.RUNNING))


def parse_pbs_qstat(text: str, job_id: str) -> JobStatus | None:
    """Plain ``qstat ID`` (a table whose state column is ``S``)."""
    header: list[str] | None = None
    for line in text.splitlines():
        parts = line.split()
        if not parts or set(line.strip()) <= set("- "):
            continue
        if parts[0].lower().startswith("job"):
            header = [p.lower() for p in parts]
            continue
        if _pbs_id_matches(parts[0], job_id):
            col = header.index("s") if header and "s" in header and len(header) == len(parts) else len(parts) - 2
            letter = parts[col][:1] if col < len(parts) else ""
            if letter in ("C", "F", "X"):
                return JobStatus(JobState.GONE, None, "completed")
            return JobStatus(_PBS_STATES.get(letter, JobState.RUNNING))
    return None


# --- LSF -----------------------------------------------------------------------------------------

_LSF_STATES = {"PEND": JobState.QUEUED, "PSUSP": JobState.QUEUED, "WAIT": JobState.QUEUED,
               "RUN": JobState.RUNNING, "USUSP": JobState.RUNNING, "SSUSP": JobState.RUNNING,
               "PROV": JobState.RUNNING, "UNKWN": JobState.RUNNING, "ZOMBI": JobState.RUNNING}


def parse_bjobs(text: str, job_id: str) -> JobStatus | None:
    """``bjobs ID`` (a table with ``JOBID`` and ``STAT`` columns)."""
    header: list[str] | None = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "JOBID":
            header = parts
            continue
        if header and parts[0] == job_id and "STAT" in header:
            stat = parts[header.index("STAT")]
            if stat == "DONE":
                return JobStatus(JobState.FINISHED, 0)
            if stat == "EXIT":
                code = _lsf_exit_code(text)
                return JobStatus(JobState.FAILED, code, "" if code is not None else "exited abnormally")
            return JobStatus(_LSF_STATES.get(stat, JobState.RUNNING))
    return None


def _lsf_exit_code(text: str) -> int | None:
    m = re.search(r"[Ee]xited with exit code (\d+)", text)
    return int(m.group(1)) if m else None


# --- HTCondor ------------------------------------------------------------------------------------

# JobStatus: 1 Idle, 2 Running, 3 Removed, 4 Completed, 5 Held, 6 Transferring Output, 7 Suspended
_CONDOR_STATES = {"1": JobState.QUEUED, "2": JobState.RUNNING, "5": JobState.QUEUED,
                  "6": JobState.RUNNING, "7": JobState.RUNNING}


def parse_condor_af(text: str, job_id: str) -> JobStatus | None:
    """``condor_q ID -af JobStatus ExitCode`` or ``condor_history`` with the same ``-af``."""
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        status = parts[0]
        code_text = parts[1] if len(parts) > 1 else "undefined"
        code = int(code_text) if code_text.lstrip("-").isdigit() else None
        if status in _CONDOR_STATES:
            reason = "held" if status == "5" else ""
            return JobStatus(_CONDOR_STATES[status], reason=reason)
        if status == "3":
            return JobStatus(JobState.FAILED, code, "removed")
        if status == "4":
            return _ended(code)
    return None
