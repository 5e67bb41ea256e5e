"""Training support: what runs around an algorithm's ``learn`` and around a trained model.

* ``agents`` - who plays: the expert, random actions or a trained model, as one ``(obs, infos) -> actions``;
* ``evaluation`` - the evaluation protocol (whole games, the policy acting alone) and its reports;
* ``callbacks`` - Tempest metrics, whole-game evaluation during training, the live one-screen summary;
* ``checkpoints`` - crash-safe (atomic) checkpoints and finding the newest one to resume from;
* ``recording`` - per-episode videos from MAME and replayable action logs.

Imports the algorithm (``tempest_gym.hybrid_dqn``), the env and the bridge; never the CLIs above it.
"""
