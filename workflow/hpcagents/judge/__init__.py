"""The trusted judge: one for every kernel, outside the candidate's process.

The candidate's object file is linked with a small trusted runner (``runner/runner.c``)
and a call stub generated here from kernel.yaml's ``parameters``; nothing else of the
judge. The runner runs in the sandbox, maps a shared-memory arena, and on each command
calls the kernel once with the arguments laid out there. This module, in the trusted
Python process, does everything that must not be in reach of the candidate:

* it makes fresh inputs before EVERY call with its own RNG (the seed never reaches the
  runner), poisons what must not be read (NaN in padding and in arrays under
  ``poison_when``; NaN in outputs), fences output padding, halos and a guard zone after
  every array with sentinels, and keeps private copies of the inputs;
* it runs the reference (an adapter over a library, or a reference C file) built by the
  trusted side in ANOTHER sandboxed process, with clean inputs, and once more on the
  absolute values of the inputs for the error bound's magnitude;
* it times every call itself, around the pipe round trip (the runner holds no trusted
  timer), checks every output of every call (timed ones included) and reads the runner's
  CPU time from /proc while it is idle between timed calls: a process that keeps
  computing after it answered "done" (a thread or task left running) fails;
* before anything is timed it waits until the other processes have stopped spinning
  (OpenMP workers spin a few ms after a parallel region), so no process times another's
  leftovers.
"""
