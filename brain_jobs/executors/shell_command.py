"""``shell``: run the query as a shell command, only when the user opts in.

It executes text, so dispatch refuses it unless ``--allow-shell`` is given
on that very command line (never from a config file or the environment).
The command runs in the job's working directory, in its own process
group, with stdin closed. The result is ``exit 0: <first line of output>``;
a non-zero exit or the timeout (``shell_timeout``, default 30 s, never past
the sub-task's deadline) fails the sub-task. The whole process group is
killed when the command exits (what it left in the background too), at
the timeout, and when the runner or worker dies (``base.run_bounded``).
"""

import subprocess

from ..errors import InvalidInput
from .base import Executor as _Base, Failed, first_line, run_bounded


# What a missing opt-in says, whichever is missing: a dispatch's (headless or to a pool) or a worker's.
OPT_IN = ("the shell executor runs each sub-task query as a shell command: add --allow-shell to opt in "
          "(to the dispatch, and to each brain worker that runs a pool's sub-tasks)")


class Executor(_Base):
    name = "shell"

    def check(self):
        if not self.ctx.allow_shell:
            raise InvalidInput(OPT_IN)

    def run(self, query: str, task=None) -> str:
        if not self.ctx.allow_shell:  # checked again here: the opt-in travels with the order
            raise Failed("shell executor not allowed (no --allow-shell)")
        timeout = self.ctx.time_left(self.ctx.settings.get("shell_timeout", 30.0))
        code, out, _ = run_bounded(query, timeout, "the command", shell=True, cwd=self.ctx.workdir,
                                   stderr=subprocess.STDOUT)
        line = first_line(out.decode("utf-8", "replace"))
        text = f"exit {code}" + (f": {line}" if line else "")
        if code != 0:
            raise Failed(text)
        return text
