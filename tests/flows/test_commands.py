from flows.campaign import FLOWS
from flows.commands import COMMANDS
from flows.steps import STEPS


def test_the_described_commands_are_the_step_tables_in_its_order():
    assert list(dict.fromkeys(step.command for step in STEPS)) == list(COMMANDS)


def test_every_command_has_a_flow_described_as_the_cli_describes_it():
    for command, description in COMMANDS.items():
        assert FLOWS[command].name == f"evip-{command}"
        assert FLOWS[command].description == description
