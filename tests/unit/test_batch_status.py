"""Parsers of scheduler output into job states (texts as the real commands print them)."""

from __future__ import annotations

from ipcluster.cluster.launchers.batch.status import (
    JobState,
    JobStatus,
    parse_bjobs,
    parse_condor_af,
    parse_pbs_qstat,
    parse_pbs_qstat_f,
    parse_sacct,
    parse_scontrol_job,
    parse_sge_qacct,
    parse_sge_qstat,
    slurm_exit_code,
)

Q, R, F, X, G = JobState.QUEUED, JobState.RUNNING, JobState.FINISHED, JobState.FAILED, JobState.GONE


def scontrol(state: str, exit_code: str = "0:0", reason: str = "None", job: str = "12") -> str:
    return (f"JobId={job} JobName=ipcluster-engines-x UserId=root(0) GroupId=root(0) Priority=1 "
            f"Account=(null) JobState={state} Reason={reason} Dependency=(null) Requeue=1 "
            f"Restarts=0 BatchFlag=1 Reboot=0 ExitCode={exit_code} RunTime=00:00:01\n")


def test_slurm_states():
    assert parse_scontrol_job(scontrol("PENDING", reason="Resources"), "12") == JobStatus(Q, None, "Resources")
    assert parse_scontrol_job(scontrol("RUNNING"), "12") == JobStatus(R)
    assert parse_scontrol_job(scontrol("COMPLETING"), "12") == JobStatus(R)
    assert parse_scontrol_job(scontrol("COMPLETED"), "12") == JobStatus(F, 0)
    assert parse_scontrol_job(scontrol("FAILED", "3:0", "NonZeroExitCode"), "12") == JobStatus(X, 3, "NonZeroExitCode")
    assert parse_scontrol_job(scontrol("CANCELLED", "0:15"), "12") == JobStatus(X, -15, "cancelled")
    assert parse_scontrol_job(scontrol("TIMEOUT", "0:0"), "12").reason == "wall time reached"
    assert parse_scontrol_job(scontrol("NODE_FAIL", "0:0"), "12").state is X
    assert parse_scontrol_job(scontrol("RUNNING", job="13"), "12") is None
    assert parse_scontrol_job("slurm_load_jobs error: Invalid job id specified\n", "12") is None


def test_slurm_sacct_and_exit_codes():
    text = "12|COMPLETED|0:0\n13|CANCELLED by 0|0:9\n"
    assert parse_sacct(text, "12") == JobStatus(F, 0)
    assert parse_sacct(text, "13") == JobStatus(X, -9, "cancelled")
    assert parse_sacct("", "12") is None
    assert slurm_exit_code("2:0") == 2 and slurm_exit_code("0:9") == -9 and slurm_exit_code("x") is None


SGE_QSTAT = """\
job-ID  prior   name       user         state submit/start at     queue                          slots ja-task-ID
-----------------------------------------------------------------------------------------------------------------
      7 0.55500 ipcluster- root         r     11/24/2026 11:31:31 all.q@localhost                    1 1
      7 0.55500 ipcluster- root         qw    11/24/2026 11:31:30                                    1 2
      8 0.00000 ipcluster- root         qw    11/24/2026 11:31:35                                    1
      9 0.00000 ipcluster- root         Eqw   11/24/2026 11:31:35                                    1
     10 0.55500 ipcluster- root         hqw   11/24/2026 11:31:35                                    1
"""


def test_sge_qstat():
    assert parse_sge_qstat(SGE_QSTAT, "7") == JobStatus(R)  # one task running is enough
    assert parse_sge_qstat(SGE_QSTAT, "8") == JobStatus(Q)
    assert parse_sge_qstat(SGE_QSTAT, "9").state is X
    assert parse_sge_qstat(SGE_QSTAT, "10") == JobStatus(Q, None, "held")
    assert parse_sge_qstat(SGE_QSTAT, "11") is None
    assert parse_sge_qstat("", "7") is None


def test_sge_qacct():
    block = ("==============================================================\n"
             "qname        all.q\nhostname     localhost\njobnumber    {job}\ntaskid       {task}\n"
             "failed       {failed}\nexit_status  {code}\n")
    text = block.format(job=7, task=1, failed=0, code=0) + block.format(job=7, task=2, failed=0, code=2)
    assert parse_sge_qacct(text, "7") == JobStatus(X, 2)
    assert parse_sge_qacct(block.format(job=8, task="undefined", failed=0, code=0), "8") == JobStatus(F, 0)
    failed = block.format(job=9, task="undefined", failed="100 : assumedly after job", code=137)
    assert parse_sge_qacct(failed, "9") == JobStatus(X, 137, "failed: 100 : assumedly after job")
    assert parse_sge_qacct("error: job id 99 not found\n", "99") is None


def test_pbs_qstat_f():
    text = "Job Id: 42.server\n    Job_Name = x\n    job_state = R\n    queue = batch\n"
    assert parse_pbs_qstat_f(text, "42.server") == JobStatus(R)
    assert parse_pbs_qstat_f(text, "42") == JobStatus(R)
    assert parse_pbs_qstat_f(text.replace("= R", "= Q"), "42") == JobStatus(Q)
    done = "Job Id: 42.server\n    job_state = F\n    Exit_status = 1\n"
    assert parse_pbs_qstat_f(done, "42.server") == JobStatus(X, 1)
    torque_wrapper = "Job Id:\t5\n\tJob_Name = ipcluster\n\tjob_state = C\n\tqueue = debug\n"
    assert parse_pbs_qstat_f(torque_wrapper, "5") == JobStatus(G, None, "completed")
    assert parse_pbs_qstat_f("qstat: Unknown Job Id 43.server\n", "43") is None


def test_pbs_qstat_table():
    text = ("Job id              Name             Username        Time Use S Queue\n"
            "------------------- ---------------- --------------- -------- - ---------------\n"
            "4                   tjob             root            00:00:00 R debug\n")
    assert parse_pbs_qstat(text, "4") == JobStatus(R)
    assert parse_pbs_qstat(text, "5") is None


def test_bjobs():
    text = ("JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME\n"
            "101     alice   RUN   normal     login1      node7       ipcl       Nov 24 11:00\n"
            "102     alice   PEND  normal     login1                  ipcl       Nov 24 11:00\n"
            "103     alice   DONE  normal     login1      node7       ipcl       Nov 24 11:00\n"
            "104     alice   EXIT  normal     login1      node7       ipcl       Nov 24 11:00\n")
    assert parse_bjobs(text, "101") == JobStatus(R)
    assert parse_bjobs(text, "102") == JobStatus(Q)
    assert parse_bjobs(text, "103") == JobStatus(F, 0)
    assert parse_bjobs(text, "104").state is X
    assert parse_bjobs("Job <105> is not found\n", "105") is None


def test_condor():
    assert parse_condor_af("1 undefined\n", "5") == JobStatus(Q)
    assert parse_condor_af("2 undefined\n", "5") == JobStatus(R)
    assert parse_condor_af("5 undefined\n", "5") == JobStatus(Q, None, "held")
    assert parse_condor_af("4 0\n", "5") == JobStatus(F, 0)
    assert parse_condor_af("4 3\n", "5") == JobStatus(X, 3)
    assert parse_condor_af("3 undefined\n", "5") == JobStatus(X, None, "removed")
    assert parse_condor_af("", "5") is None


def test_describe_and_ended():
    assert JobStatus(X, 3, "NonZeroExitCode").describe() == "failed (NonZeroExitCode, exit code 3)"
    assert JobStatus(R).describe() == "running"
    assert [s.ended for s in (Q, R, F, X, G)] == [False, False, True, True, True]
