"""What a network learns: targets `y = T(θ, trajectory)` (`_target.py`) and the tasks
that draw training pairs `(x, y)` (`_task.py`)."""

from ._target import (
    AbstractTarget as AbstractTarget,
    Derived as Derived,
    Forecast as Forecast,
    Hidden as Hidden,
    Parameter as Parameter,
    Signal as Signal,
    Space as Space,
)
from ._task import AbstractTask as AbstractTask, Batch as Batch, ModelSelection as ModelSelection, Task as Task
