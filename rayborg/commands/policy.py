"""`rayborg policy sample`: every policy rule with its default, description, scope types and the API
operations it guards, as YAML in `oslopolicy-sample-generator`'s format (each default commented
out), so that an operator can start a policy file from it."""

from __future__ import annotations

import argparse
from pathlib import Path

# The route table's collections -> the resource part of a rule name (`cyborg:<resource>:<action>`).
_RESOURCES = {"device_profiles": "device_profile", "accelerator_requests": "arq", "devices": "device",
              "deployables": "deployable", "attributes": "attribute"}
_ACTIONS = {"GET": "get_all", "POST": "create", "PATCH": "update", "DELETE": "delete"}
# Routes whose rule the naming below does not give.
_NAMED = {("GET", "/v2/quotas/usage"): "cyborg:quota:get"}
# The per-deployable attribute routes (2023.1 attribute API; singular as specified, plural alias).
for _dep, _attr in (("deployable", "attribute"), ("deployables", "attributes")):
    for _method, _tail, _action in (("GET", "", "get_all"), ("POST", "", "create"), ("DELETE", "", "delete"),
                                    ("GET", "/{uuid_or_key}", "get_one"), ("PUT", "/{uuid_or_key}", "update"),
                                    ("DELETE", "/{uuid_or_key}", "delete")):
        _NAMED[_method, f"/v2/{_dep}/{{uuid}}/{_attr}{_tail}"] = f"cyborg:attribute:{_action}"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("policy", help="the policy rules and their defaults",
                            description="The cyborg:* policy rules, their defaults and what they guard.")
    actions = parser.add_subparsers(dest="policy_action", metavar="ACTION", required=True)
    p = actions.add_parser("sample", help="write a sample policy file (YAML, defaults commented out)",
                           description="Every rule with its default, description, scope types and "
                                       "operations, as oslopolicy-sample-generator writes them. Uncomment "
                                       "a rule to change it; give the file to `rayborg serve "
                                       "--policy-file`.")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def route_rule(method: str, path: str) -> str | None:
    """The rule a route's handler checks, by the API's naming: `GET /v2/devices` ->
    `cyborg:device:get_all`, `GET /v2/devices/{uuid}` -> `get_one`, `POST /v2/devices/{uuid}/enable`
    -> `enable`; None for a route outside the cyborg:* rules."""
    if (method, path) in _NAMED:
        return _NAMED[method, path]
    parts = path.strip("/").split("/")
    if len(parts) < 2 or parts[0] != "v2" or parts[1] not in _RESOURCES:
        return None
    if len(parts) > 3:
        action = parts[3]
    elif len(parts) == 3 and method == "GET":
        action = "get_one"
    else:
        action = _ACTIONS.get(method)
    return f"cyborg:{_RESOURCES[parts[1]]}:{action}" if action else None


def operations(routes) -> dict[str, list[dict[str, str]]]:
    """Rule name -> the operations (method, path) of the route table that check it."""
    ops: dict[str, list[dict[str, str]]] = {}
    for method, path, _handler in routes:
        rule = route_rule(method, path)
        if rule is not None:
            ops.setdefault(rule, []).append({"method": method, "path": path})
    return ops


def documented_defaults() -> list:
    """Every rule's default; the API rules documented with their operations and scope types."""
    from oslo_policy import policy

    from rayborg.api.app import ROUTES
    from rayborg.api.policy import rule_defaults

    ops = operations(ROUTES)
    rules = []
    for rule in rule_defaults(scoped=True):
        if rule.name in ops:
            rule = policy.DocumentedRuleDefault(rule.name, rule.check_str, rule.description, ops[rule.name],
                                                deprecated_rule=rule.deprecated_rule,
                                                scope_types=rule.scope_types)
        rules.append(rule)
    return rules


def sample() -> str:
    # oslopolicy-sample-generator's own formatter: the sample reads exactly like other services'.
    from oslo_policy import generator

    return "".join(generator._format_rule_default_yaml(rule) for rule in documented_defaults())


def run(args: argparse.Namespace) -> int:
    text = sample()
    if args.output:
        from rayborg.cli import CLIError

        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise CLIError(f"cannot write {args.output}: {exc.strerror}") from None
    else:
        print(text, end="")
    return 0
