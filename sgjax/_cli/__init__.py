"""The `sgjax` command line (`_main.py`: flags, parser, exit status; `_commands.py`:
`simulate`, `train`, `infer`, `reproduce`; `_folders.py`: output folders) and the main
job it runs (`_mainjob.py`: the boarding-school SGNN)."""

from ._main import main as main
