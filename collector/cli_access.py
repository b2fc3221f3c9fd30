"""``posture-collector token`` and ``user``: who may use the API and the dashboard.

A token is printed once, on stdout (so ``$(posture-collector token create ...)`` captures
it), and stored only as its SHA-256. Passwords are read from ``--password-file`` (its first
line) or prompted twice without echo, never taken on the command line where ``ps`` and
shell history would keep them. Every change is recorded in the audit log under ``--user``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path

from collector.access import ApiToken, Role, User
from collector.accounts import AccessControl, parse_role
from collector.cli_common import add_common, add_user, parse_instant
from collector.service import PostureService, ServiceError

__all__ = ["HANDLERS", "add_parsers"]

Handler = Callable[[argparse.Namespace, PostureService], int]
_ROLES = [role.value for role in Role]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _token_parsers(commands)
    _user_parsers(commands)


def _token_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="API tokens for scripts (Authorization: Bearer)")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a token; it is printed only once")
    create.add_argument("--name", required=True, help="who or what uses it (never reused)")
    create.add_argument("--role", required=True, choices=_ROLES)
    create.add_argument("--expires", help="ISO date or date-time (UTC); default: never")
    revoke = actions.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("name")
    listing = actions.add_parser("list", help="tokens with role and state")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    for sub in (create, revoke, listing):
        add_common(sub)
        add_user(sub)


def _user_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = commands.add_parser("user", help="people who log in to the dashboard")
    actions = user.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a person (password prompted or --password-file)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=_ROLES)
    passwd = actions.add_parser("passwd", help="set a new password (ends their sessions)")
    passwd.add_argument("name")
    for sub in (add, passwd):
        sub.add_argument("--password-file", type=Path, help="read the password's first line")
    role = actions.add_parser("set-role", help="change a person's role")
    role.add_argument("name")
    role.add_argument("role", choices=_ROLES)
    disable = actions.add_parser("disable", help="stop a person logging in; ends sessions")
    disable.add_argument("name")
    listing = actions.add_parser("list", help="people with role and state")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    for sub in (add, passwd, role, disable, listing):
        add_common(sub)
        add_user(sub)


def _password(path: Path | None) -> str:
    if path is not None:
        lines = path.read_text().splitlines()
        return lines[0] if lines else ""
    if not sys.stdin.isatty():
        raise ServiceError("no terminal to prompt for a password: use --password-file FILE")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ServiceError("the passwords differ")
    return first


def _token(args: argparse.Namespace, service: PostureService) -> int:
    access = AccessControl(service.store, service.clock)
    if args.action == "create":
        role = parse_role(args.role)
        expires = parse_instant(args.expires) if args.expires else None
        with service.audit.recording(
            args.user, "token.create", f"token:{args.name}", {"role": role.value},
            refused=ServiceError,
        ):  # fmt: skip
            record, secret = access.create_token(args.name, role, args.user, expires)
        print(secret)
        print(
            f"token {record.name!r} ({record.role.value}) created; it is shown only once."
            " Send it as 'Authorization: Bearer TOKEN'",
            file=sys.stderr,
        )
    elif args.action == "revoke":
        with service.audit.recording(
            args.user, "token.revoke", f"token:{args.name}", refused=ServiceError
        ):
            access.revoke_token(args.name, args.user)
        print(f"token {args.name!r} revoked")
    else:
        _print_tokens(access.list_tokens(), args.format, service)
    return 0


def _print_tokens(tokens: list[ApiToken], fmt: str, service: PostureService) -> None:
    now = service.clock()
    if fmt == "json":
        rows = [
            {"id": t.id, "name": t.name, "role": t.role.value, "created_by": t.created_by,
             "created_at": t.created_at.isoformat(), "live": t.live_at(now),
             "expires_at": t.expires_at.isoformat() if t.expires_at else None,
             "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None}
            for t in tokens
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return
    for t in tokens:
        state = "live" if t.live_at(now) else "revoked" if t.revoked_at else "expired"
        print(f"{t.id:>4}  {t.name:<24} {t.role.value:<8} {state:<8} created by {t.created_by}")


def _user(args: argparse.Namespace, service: PostureService) -> int:
    access = AccessControl(service.store, service.clock)
    action: str = args.action
    if action == "list":
        _print_users(access.list_users(), args.format)
        return 0
    detail: dict[str, object] = {"role": args.role} if action in ("add", "set-role") else {}
    password = _password(args.password_file) if action in ("add", "passwd") else ""
    with service.audit.recording(
        args.user, f"user.{action}", f"user:{args.name}", detail, refused=ServiceError
    ):
        if action == "add":
            access.add_user(args.name, parse_role(args.role), password, args.user)
        elif action == "passwd":
            access.set_password(args.name, password)
        elif action == "set-role":
            access.set_role(args.name, parse_role(args.role))
        else:
            access.disable_user(args.name)
    done = {"add": "added", "passwd": "password changed", "set-role": "role changed",
            "disable": "disabled"}[action]  # fmt: skip
    print(f"user {args.name!r} {done}")
    return 0


def _print_users(users: list[User], fmt: str) -> None:
    if fmt == "json":
        rows = [
            {"id": u.id, "name": u.name, "role": u.role.value, "created_by": u.created_by,
             "created_at": u.created_at.isoformat(),
             "disabled_at": u.disabled_at.isoformat() if u.disabled_at else None}
            for u in users
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return
    for u in users:
        state = "disabled" if u.disabled_at else "enabled"
        print(f"{u.id:>4}  {u.name:<24} {u.role.value:<8} {state:<8} added by {u.created_by}")


HANDLERS: dict[str, Handler] = {"token": _token, "user": _user}
