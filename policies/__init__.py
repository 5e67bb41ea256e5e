"""Policies that play without learning: the rule-based expert (the teacher, ``expert.py``).

Imported as ``tempest_gym.policies``: an install puts this folder there (setup.py), and in a checkout
``tempest_gym/policies`` is a link to it. The learned hybrid Q policies live with their algorithm, in
``tempest_gym.hybrid_dqn.policies`` (as SB3 keeps ``DQNPolicy`` in ``stable_baselines3/dqn/policies.py``).
"""
