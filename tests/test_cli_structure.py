"""The command line's structure (issue 10, item 4): options declared once and shared by every
command that simulates a scenario, ``--policy-option`` wherever a policy runs, and no import
cycle between ``mfsched.cli`` and the data-plane commands."""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict
from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

import pytest
import typer.main

from mfsched import cli, cli_experiments
from mfsched.cli_options import EmulationOptions, ScenarioOptions
from mfsched.dataplane import commands

SRC = Path(cli.__file__).resolve().parent


def _same(a, b) -> bool:
    """Two ``Annotated[type, typer.Option(...)]`` made from one declaration (annotations are
    evaluated afresh for each signature, so the objects differ; their content does not)."""
    (ia,), (ib,) = a.__metadata__, b.__metadata__
    return (a.__origin__ == b.__origin__ and ia.help == ib.help
            and ia.param_decls == ib.param_decls)


def _imports(path: Path) -> set[str]:
    """Absolute names of the mfsched modules a file imports (at any depth of the file)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module) if p)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("mfsched")}


def test_only_the_entry_point_imports_the_cli():
    importers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                       if p.name != "cli.py" and "mfsched.cli" in _imports(p))
    assert importers == ["__main__.py"]


@pytest.mark.parametrize("module", ["cli_options.py", "cli_output.py", "cli_files.py",
                                    "dataplane/commands.py"])
def test_shared_command_modules_do_not_import_the_commands(module):
    imported = _imports(SRC / module)
    assert "mfsched.cli" not in imported and "mfsched.dataplane.commands" not in imported


@pytest.mark.parametrize("command,absent", [(cli.simulate, set()),
                                            (commands.testbed, {"nic_gbps"}),
                                            (commands.compare, {"nic_gbps"})])
def test_every_scenario_option_is_the_one_declaration(command, absent):
    params = inspect.signature(command).parameters
    declared = get_type_hints(ScenarioOptions, include_extras=True)
    for f in fields(ScenarioOptions):
        if f.name in absent:  # the emulated testbed's NICs are the testbed's
            assert f.name not in params
        else:
            assert _same(params[f.name].annotation, declared[f.name]), f.name
    assert "policy_option" in params


def test_sweep_shares_the_scenario_options_it_does_not_sweep():
    params = inspect.signature(cli.sweep).parameters
    declared = get_type_hints(ScenarioOptions, include_extras=True)
    swept = {"workload", "rate", "bandwidth_scale", "seed"}
    for f in fields(ScenarioOptions):
        if f.name in swept:
            assert params.get(f.name) is None or not _same(params[f.name].annotation,
                                                           declared[f.name])
        else:
            assert _same(params[f.name].annotation, declared[f.name]), f.name


@pytest.mark.parametrize("command", [commands.testbed, commands.compare])
def test_the_emulation_options_are_declared_once(command):
    params = inspect.signature(command).parameters
    declared = get_type_hints(EmulationOptions, include_extras=True)
    for f in fields(EmulationOptions):
        assert _same(params[f.name].annotation, declared[f.name]), f.name
    assert params["requests"].default == 32 and params["warmup"].default == 8


# Flags that name different things on different commands, each declared where it is used:
# sweep's lists of what it sweeps, and where each command writes (a run's directory, sweep's
# JSON file, reproduce's results directory, report's page).
_DIFFERENT = {("sweep", "--workload"), ("sweep", "--rate"), ("sweep", "--bandwidth-scale"),
              ("sweep", "--out"), ("reproduce", "--out"), ("report", "--out")}


def _commands(group, prefix=""):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield prefix + name, command


def test_every_option_of_every_command_is_declared_once():
    """One flag, one declaration (one help text) across every command of ``mfsched``, the
    data-plane and experiment commands included: only the flags of _DIFFERENT mean something
    else on their command."""
    commands.register(cli.app)
    cli_experiments.register(cli.app)
    helps: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, command in _commands(typer.main.get_command(cli.app)):
        for param in command.params:
            if param.param_type_name == "option" and (name, param.opts[0]) not in _DIFFERENT:
                helps[param.opts[0]][param.help].append(name)
    assert len(helps) > 40  # the walk found the commands' options
    repeated = {flag: dict(by_help) for flag, by_help in helps.items() if len(by_help) > 1}
    assert not repeated
