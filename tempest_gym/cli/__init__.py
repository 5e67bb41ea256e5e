"""The command-line tools, each a console script ``tempest-<tool>`` (setup.py):

* ``common`` - the toolkit they share: argument groups, the env/model factories, the exit codes;
* ``train`` - RL-Zoo-style training; ``zoo`` holds its YAML, flag and log-folder helpers;
* ``enjoy`` - watch a player, optionally recording videos and action logs;
* ``evaluate`` - the evaluation protocol over whole games;
* ``replay`` - replay an action log and check it matches;
* ``plot`` - learning curves of run folders;
* ``client`` - run MAME clients on another host for a ``--remote`` trainer.

``python -m tempest_gym.<tool>`` still works: ``tempest_gym/<tool>.py`` hands over to the tool here. The CLIs
sit on top of everything else; nothing below imports them.
"""
