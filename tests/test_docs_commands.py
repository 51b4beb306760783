"""Every `python ...` command in the README and the docs still parses: the script or module exists and
its argument parser accepts the command's flags.

The commands are read from the Markdown as a reader would copy them: fenced blocks (with `\\`
continuations joined and `&&` chains split) and inline code spans. Each runs in this process up to
its `parse_args`, which here raises `_Parsed` instead of returning, so nothing is trained, downloaded
or written. Placeholders stay as they are written (`$D/train.tsv`, `PATH/TO/model`): a parser checks
flags and their types, not that files exist. Optional parts written `[--flag value]` are parsed with
the brackets removed.
"""

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("data/*/README.md")),
         *sorted(ROOT.glob("minilm/pretrained/*/README.md"))]
_COMMAND = re.compile(r"(?:python|torchrun)\b")


def _commands_in(text: str) -> list[tuple[str, bool]]:
    """The `python ...` and `torchrun ...` commands of one Markdown page, each with whether it stands
    in a fenced block (to be copied and run whole) rather than in a sentence (which may name a command
    without its required arguments: "what `python infer.py generate` uses")."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            found += [(part.strip(), True) for part in line.split("&&") if _COMMAND.match(part.strip())]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [(span, False) for span in re.findall(r"`([^`\n]+)`", prose) if _COMMAND.match(span)]
    return found


def _argv(command: str) -> list[str] | None:
    """The command's words after `python`/`torchrun` and its options; None where there is no minilm
    command (`python -c`, `-m pytest`, a bare `torchrun` in prose)."""
    words = shlex.split(command.replace("[", " ").replace("]", " "), comments=True)
    words = [w for w in words if w != "..."]
    if words[0] == "torchrun":
        script = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
        return words[script:] if script else None  # torchrun's own options come before the script
    words = words[1:]
    if not words or words[:2] == ["-m", "pytest"] or words[:1] == ["-c"]:
        return None
    return words


class _Parsed(Exception):
    pass


COMMANDS = [(page, cmd, whole) for page in PAGES for cmd, whole in _commands_in(page.read_text(encoding="utf-8"))
            if _argv(cmd)]


def test_the_pages_hold_the_commands_people_run():
    scripts = {_argv(cmd)[0] for _, cmd, _ in COMMANDS}
    assert {"train.py", "finetune.py", "infer.py"} <= scripts, scripts
    assert len(COMMANDS) > 60, len(COMMANDS)


def test_a_wrong_flag_is_caught(monkeypatch, capsys):
    """The check below can fail: a flag no parser has is reported as a parse error."""
    with pytest.raises(SystemExit):
        _parse(["finetune.py", "--task", "cls", "--no-such-flag", "1"], monkeypatch)


def _parse(argv: list[str], monkeypatch) -> None:
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.chdir(ROOT)
    if argv[0] == "-m":
        monkeypatch.setattr(sys, "argv", [argv[1], *argv[2:]])
        monkeypatch.delitem(sys.modules, argv[1], raising=False)  # run it fresh as __main__, as `python -m` does
        target = lambda: runpy.run_module(argv[1], run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        script = ROOT / argv[0]
        assert script.is_file(), f"{argv[0]} does not exist"
        monkeypatch.setattr(sys, "argv", [str(script), *argv[1:]])
        monkeypatch.syspath_prepend(str(script.parent))
        target = lambda: runpy.run_path(str(script), run_name="__main__")  # noqa: E731
    try:
        target()
    except _Parsed:
        return
    raise AssertionError("the command ran to its end without parsing arguments")


@pytest.mark.parametrize("page,command,whole", COMMANDS, ids=[f"{p.relative_to(ROOT)}:{c[:60]}" for p, c, _ in COMMANDS])
def test_every_documented_command_parses(page, command, whole, monkeypatch, capsys):
    try:
        _parse(_argv(command), monkeypatch)
    except SystemExit as exit_:
        err = capsys.readouterr().err
        named_in_a_sentence = not whole and "the following arguments are required" in err
        if exit_.code not in (0, None) and not named_in_a_sentence:
            raise AssertionError(f"{page.relative_to(ROOT)}: `{command}` does not parse:\n{err}") from None
