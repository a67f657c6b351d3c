"""coalition-admin: the operator's tool for partners, stores, terminals, API keys, rules and members.

Every command (services/partners/admin_commands.py) is one call of PartnersService's admin API
with the operator's certificate and admin key. Output is a readable table; `--json` prints the
response message as protobuf JSON (the proto's field names) for scripts. A rerun after a timeout
is safe: commands that name what they change (a partner, store, terminal or key) are idempotent on
that id, and those that create something under a server-assigned id (keys issue and rotate, rule
versions) take `--request-id` (default: a fresh UUID, printed on standard error; rerun with it).

    coalition-admin partners register acme --kind retailer --name "Acme Stores"
    coalition-admin stores create acme-berlin-01 --partner acme --name "Acme Berlin"
    coalition-admin terminals create acme-berlin-01 till-1
    coalition-admin keys issue --partner acme
    coalition-admin earn-rules create --partner acme --base-rate 1 --valid-from 2026-12-01T00:00:00+01:00
    coalition-admin members balances --card 6001000000000001

Settings: COALITION_PARTNERS_ADDRESS (default 127.0.0.1:50052), COALITION_ADMIN_API_KEY, and the
operator's certificate (COALITION_CLIENT_TLS_CERT_PATH, ..._KEY_PATH, COALITION_TLS_CA_PATH; in
development, COALITION_ENV=development, `var/tls/operator.*` and the development admin key).
Exit status: 0 done, 1 refused by the server (the reason is printed), 2 bad command line or settings.
"""

from __future__ import annotations

import argparse
import sys

import grpc

from coalition.partners.v1 import partners_pb2_grpc
from services.common import cli
from services.partners.admin_commands import COMMANDS, GROUP_SUMMARIES, PROG, Command, Session

# The top-level help's examples: a new partner onboarded, in order.
ONBOARDING = (
    ("partners", "register"),
    ("stores", "create"),
    ("terminals", "create"),
    ("keys", "issue"),
    ("earn-rules", "create"),
    ("members", "balances"),
)


def _examples(*commands: str) -> str:
    return cli.examples(*(f"{PROG} {line}" for line in commands))


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    onboarding = [
        command.examples[0]
        for group, name in ONBOARDING
        for command in COMMANDS
        if (command.group, command.name) == (group, name)
    ]
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog=_examples(*onboarding) + "\n\n" + __doc__.split("\n\n")[-1],
        formatter_class=formatter,
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    commands_of: dict[str, argparse._SubParsersAction] = {}
    for group, summary in GROUP_SUMMARIES.items():
        lines = [line for command in COMMANDS if command.group == group for line in command.examples]
        group_parser = groups.add_parser(
            group, help=summary, description=summary, epilog=_examples(*lines), formatter_class=formatter
        )
        commands_of[group] = group_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        leaf = commands_of[command.group].add_parser(
            command.name,
            help=command.summary,
            description=command.summary,
            epilog=_examples(*command.examples),
            formatter_class=formatter,
        )
        command.arguments(leaf)
        leaf.add_argument("--json", action="store_true", help="print the response as protobuf JSON")
        if command.keyed:
            leaf.add_argument(
                "--request-id",
                help="id of this change (default: a fresh UUID, printed): rerun with the same id to retry safely",
            )
        elif command.mutation:
            leaf.add_argument(
                "--request-id",
                help="id for the service's log (optional): this command is idempotent on the id it names",
            )
        leaf.set_defaults(command_spec=command)
    return parser


def run(args: argparse.Namespace, stub: partners_pb2_grpc.PartnersServiceStub) -> int:
    command: Command = args.command_spec
    request_id = getattr(args, "request_id", None) or ""
    if command.keyed and not request_id:
        request_id = cli.new_request_id()
        print(f"request id: {request_id} (rerun with --request-id {request_id} to retry safely)", file=sys.stderr)
    try:
        response, text = command.run(Session(args, stub, request_id))
    except grpc.RpcError as error:
        cli.print_refusal(error)
        return cli.EXIT_REFUSED
    print(cli.message_json(response) if args.json else text)
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        with cli.operator_channel("partners") as channel:
            return run(args, partners_pb2_grpc.PartnersServiceStub(channel))
    except SystemExit as exit_:  # argparse (usage errors, --help) and settings_or_exit
        return exit_.code if isinstance(exit_.code, int) else cli.EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
