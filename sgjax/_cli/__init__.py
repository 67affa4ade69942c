"""The `sgjax` command line (`_main.py`: `simulate`, `train`, `infer`, `reproduce`) and
the main job it runs (`_mainjob.py`: the boarding-school SGNN)."""

from ._main import main as main
