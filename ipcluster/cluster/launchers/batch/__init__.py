"""Launchers that run the controller or engines as batch jobs.

* :mod:`.base` — submit, follow the job's state, cancel; the generic ``batch`` launcher;
* :mod:`.templates` — job scripts rendered from templates by pure functions;
* :mod:`.status` — job states and the parsers of scheduler output;
* one module per scheduler: :mod:`.slurm`, :mod:`.sge`, :mod:`.pbs`, :mod:`.lsf`,
  :mod:`.htcondor`.
"""
