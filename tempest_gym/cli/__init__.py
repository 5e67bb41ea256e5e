"""The command-line tools :

* ``train`` - RL-Zoo-style training; ``zoo`` holds its YAML, flag and log-folder helpers;
* ``enjoy`` - watch a player, optionally recording videos and action logs;
* ``evaluate`` - the evaluation protocol over whole games;
* ``replay`` - replay an action log and check it matches;
* ``plot`` - learning curves of run folders;
* ``client`` - run MAME clients on another host for a ``--remote`` trainer.

The CLIs sit on top of everything else; nothing below imports them.
"""
