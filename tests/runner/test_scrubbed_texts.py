"""The texts an outcome carries (the error's end of stderr, the last progress message, why
a result line was unusable) are scrubbed of the job's secrets before any cut, and keep
what they would show without secrets."""

from __future__ import annotations

import sys

from supervisor.runner import EndReason
from supervisor.runner.outcome import ERROR_LIMIT
from tests.runner.conftest import RunFn, fast_config


def _python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-S", "-c", code)


async def test_a_long_secret_the_child_never_prints_costs_the_error_no_detail(run: RunFn) -> None:
    secret = "k" + "".join(f"{i:04x}" for i in range(1300))
    code = (
        "import sys\n"
        "sys.stderr.write('noise ' * 4000 + 'RuntimeError: quota exceeded\\n')\n"
        "sys.exit(1)\n"
    )
    outcome = await run(fast_config(_python(code)), secrets=[secret])
    assert outcome.error is not None and outcome.error.endswith("RuntimeError: quota exceeded")
    assert len(outcome.error) > ERROR_LIMIT - 50, outcome.error


async def test_trailing_whitespace_on_stderr_leaves_the_error_its_detail(run: RunFn) -> None:
    code = (
        "import sys\n"
        "sys.stderr.write('Traceback (most recent call last):\\n'"
        " 'RuntimeError: embedding quota exceeded\\n' + ' ' * 1200 + '\\n')\n"
        "sys.exit(1)\n"
    )
    outcome = await run(fast_config(_python(code)))
    assert outcome.error is not None and outcome.error.endswith("embedding quota exceeded")


async def test_an_unusable_result_line_never_quotes_the_childs_text(run: RunFn) -> None:
    secret = "40512345678901"
    code = f"print('RESULT: {secret}e400')"
    outcome = await run(fast_config(_python(code)), secrets=[secret])
    assert outcome.ended is EndReason.BAD_RESULT
    assert outcome.error is not None and "beyond a float's range" in outcome.error
    assert secret not in outcome.error
