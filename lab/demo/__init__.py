"""``ems demo``: the end-to-end demo of the hybrid EMS on one machine.

It starts the real commands as child processes on loopback (``ems certs``, ``ems sim``, one ``ems edge`` per
cabinet, ``ems central``), all on one shared simulated clock, uploads the day-ahead file, runs a scenario's
timeline of actions, samples what really happened, and writes a report (``summary.json`` and PNG plots).

Modules: :mod:`.options` (what the user asked for), :mod:`.sitecopy` (the site file rewritten onto free
loopback ports and directories under the output directory), :mod:`.processes` (child processes),
:mod:`.scenarios` (the four timelines), :mod:`.sampler` (realised data), :mod:`.costs` and :mod:`.report`
(``summary.json``), :mod:`.plots` (PNG), :mod:`.progress` (the live progress line), :mod:`.runner`
(ties them together).
"""
