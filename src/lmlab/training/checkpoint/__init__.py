"""Checkpoints: the files and how they are written and read (format.py), the checks on what a loaded one holds
(checks.py), the named stateful parts a trainer state is made of (parts.py), and the Trainer's own
(trainer_state.py)."""
